package secrets

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

func testKeys(t testing.TB) *Keys {
	t.Helper()
	key, err := ParseKey(NewKey())
	if err != nil {
		t.Fatal(err)
	}
	k, err := NewKeys(key)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestEncryptRoundTripWithFreshNonce(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	a, b := k.Encrypt("sk-upstream-secret"), k.Encrypt("sk-upstream-secret")
	if bytes.Equal(a, b) {
		t.Fatal("same plaintext sealed twice gave the same ciphertext: nonce reused")
	}
	if bytes.Contains(a, []byte("sk-upstream-secret")) {
		t.Fatal("ciphertext contains the plaintext")
	}
	for _, sealed := range [][]byte{a, b} {
		got, err := k.Decrypt(sealed)
		if err != nil || got != "sk-upstream-secret" {
			t.Fatalf("Decrypt = %q, %v", got, err)
		}
	}
}

func TestDecryptRefusesTamperingAndOtherKeys(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	sealed := k.Encrypt("secret")
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x01
		if _, err := k.Decrypt(bad); err != ErrDecrypt {
			t.Fatalf("flipping byte %d: err = %v, want ErrDecrypt", i, err)
		}
	}
	if _, err := testKeys(t).Decrypt(sealed); err != ErrDecrypt {
		t.Fatalf("other key: err = %v, want ErrDecrypt", err)
	}
	if _, err := k.Decrypt(sealed[:5]); err != ErrDecrypt {
		t.Fatalf("truncated: err = %v, want ErrDecrypt", err)
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	if _, err := ParseKey(NewKey()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "not base64!", "c2hvcnQ=" /* "short" */} {
		if _, err := ParseKey(bad); err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
		}
	}
	if _, err := NewKeys(make([]byte, 16)); err == nil {
		t.Error("NewKeys accepted a 16-byte key")
	}
}

func TestNewTokenAndHash(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	secret, prefix := NewToken()
	other, _ := NewToken()
	if !ValidTokenSyntax(secret) || !strings.HasPrefix(secret, prefix) || len(prefix) != TokenPrefixLen {
		t.Fatalf("NewToken = %q, %q", secret, prefix)
	}
	if secret == other {
		t.Fatal("two tokens are equal")
	}
	h := k.HashToken(secret)
	if len(h) != 32 || !CompareHash(h, k.HashToken(secret)) || CompareHash(h, k.HashToken(other)) {
		t.Fatal("HashToken is not a deterministic per-secret hash")
	}
	if CompareHash(h, testKeys(t).HashToken(secret)) {
		t.Fatal("hash does not depend on the key")
	}
}

// HashToken reuses pooled HMACs: concurrent hashes must each be the plain
// HMAC-SHA256 of their own secret.
func TestHashTokenConcurrent(t *testing.T) {
	t.Parallel()
	k := testKeys(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				secret, _ := NewToken()
				mac := hmac.New(sha256.New, k.hashKey)
				mac.Write([]byte(secret))
				if got := k.HashToken(secret); !CompareHash(got, mac.Sum(nil)) {
					t.Errorf("HashToken(%q) = %x, want %x", secret, got, mac.Sum(nil))
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestValidTokenSyntax(t *testing.T) {
	t.Parallel()
	secret, _ := NewToken()
	for _, bad := range []string{"", "sk-", secret[:len(secret)-1], secret + "a", "xx" + secret[2:], secret[:10] + "!" + secret[11:]} {
		if ValidTokenSyntax(bad) {
			t.Errorf("ValidTokenSyntax(%q) = true", bad)
		}
	}
}

func TestBearerToken(t *testing.T) {
	t.Parallel()
	for header, want := range map[string]string{"Bearer abc": "abc", "bearer abc": "abc", "BEARER  abc ": "abc"} {
		if got, ok := BearerToken(header); !ok || got != want {
			t.Errorf("BearerToken(%q) = %q, %v", header, got, ok)
		}
	}
	for _, header := range []string{"", "Bearer", "Bearer ", "Basic abc", "Bearerabc"} {
		if _, ok := BearerToken(header); ok {
			t.Errorf("BearerToken(%q) accepted", header)
		}
	}
}

func TestKeyHint(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]string{
		"sk-proj-abcdefghijklmnop1234": "sk-...1234",
		"abcdefghijklmnop9876":         "...9876",
		"short":                        "...",
	} {
		if got := KeyHint(key); got != want {
			t.Errorf("KeyHint(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestKeyFileCreatedOnceAndReused(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "llmproxy.key")
	var wg sync.WaitGroup
	keys := make([][]byte, 8)
	created := make([]bool, 8)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			keys[i], created[i], err = LoadOrCreateKeyFile(path)
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	creators := 0
	for i := range keys {
		if created[i] {
			creators++
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatal("concurrent starts read different keys")
		}
	}
	if creators != 1 {
		t.Fatalf("%d callers created the key file, want 1", creators)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Fatalf("key file mode %o, want 600", perm)
	}
	again, created2, err := LoadOrCreateKeyFile(path)
	if err != nil || created2 || !bytes.Equal(again, keys[0]) {
		t.Fatalf("reload: created=%v err=%v", created2, err)
	}
}

func TestKeyFileCorrupt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "llmproxy.key")
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, _, err := LoadOrCreateKeyFile(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want an error naming %s", err, path)
	}
}

func FuzzBearerToken(f *testing.F) {
	f.Add("Bearer sk-abc")
	f.Add("bearer ")
	f.Add("")
	f.Fuzz(func(t *testing.T, header string) {
		token, ok := BearerToken(header)
		if ok && (token == "" || strings.TrimSpace(token) != token) {
			t.Fatalf("BearerToken(%q) = %q", header, token)
		}
	})
}

func FuzzValidTokenSyntax(f *testing.F) {
	secret, _ := NewToken()
	f.Add(secret)
	f.Add("sk-")
	f.Fuzz(func(t *testing.T, s string) {
		if ValidTokenSyntax(s) && (len(s) != 46 || !strings.HasPrefix(s, "sk-")) {
			t.Fatalf("accepted %q", s)
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	k := testKeys(f)
	genuine := k.Encrypt("seed")
	f.Add(genuine)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, sealed []byte) {
		// Anything but the genuine ciphertext must fail cleanly, never panic or decrypt.
		if _, err := k.Decrypt(sealed); err == nil && !bytes.Equal(sealed, genuine) {
			t.Fatalf("decrypted forged input %x", sealed)
		}
	})
}
