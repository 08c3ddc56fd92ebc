// Package secrets encrypts upstream API keys at rest (AES-256-GCM), and
// makes and hashes client token secrets (HMAC-SHA256), all from one 32-byte
// master key.
package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// KeySize is the master key length: AES-256.
const KeySize = 32

// ciphertextVersion prefixes every ciphertext so the format can change later.
const ciphertextVersion = 1

// Keys derives the encryption and token-hashing keys from the master key, so
// that neither use reveals the other.
type Keys struct {
	aead    cipher.AEAD
	hashKey []byte
	macs    sync.Pool // HMACs keyed with hashKey: hashing runs on every proxied request
}

// NewKeys checks the master key and derives the working keys.
func NewKeys(master []byte) (*Keys, error) {
	if len(master) != KeySize {
		return nil, fmt.Errorf("key is %d bytes, want %d", len(master), KeySize)
	}
	block, err := aes.NewCipher(derive(master, "llmproxy upstream key encryption v1"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	k := &Keys{aead: aead, hashKey: derive(master, "llmproxy token hash v1")}
	k.macs.New = func() any { return hmac.New(sha256.New, k.hashKey) }
	return k, nil
}

// ParseKey decodes a base64 (standard or URL, padded or not) 32-byte key.
func ParseKey(encoded string) ([]byte, error) {
	encoded = strings.TrimSpace(encoded)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if key, err := enc.DecodeString(encoded); err == nil {
			if len(key) != KeySize {
				return nil, fmt.Errorf("decodes to %d bytes, want %d", len(key), KeySize)
			}
			return key, nil
		}
	}
	return nil, errors.New("not valid base64")
}

// NewKey returns a random master key, base64-encoded.
func NewKey() string {
	key := make([]byte, KeySize)
	rand.Read(key)
	return base64.StdEncoding.EncodeToString(key)
}

func derive(master []byte, purpose string) []byte {
	mac := hmac.New(sha256.New, master)
	mac.Write([]byte(purpose))
	return mac.Sum(nil)
}

// Encrypt seals plaintext with a random nonce: version || nonce || ciphertext.
func (k *Keys) Encrypt(plaintext string) []byte {
	nonce := make([]byte, k.aead.NonceSize())
	rand.Read(nonce)
	out := make([]byte, 0, 1+len(nonce)+len(plaintext)+k.aead.Overhead())
	out = append(out, ciphertextVersion)
	out = append(out, nonce...)
	return k.aead.Seal(out, nonce, []byte(plaintext), []byte{ciphertextVersion})
}

// ErrDecrypt means the ciphertext is corrupt or was sealed with another key.
var ErrDecrypt = errors.New("cannot decrypt: wrong ENCRYPTION_KEY or corrupt data")

// Decrypt opens what Encrypt sealed.
func (k *Keys) Decrypt(sealed []byte) (string, error) {
	n := k.aead.NonceSize()
	if len(sealed) < 1+n+k.aead.Overhead() || sealed[0] != ciphertextVersion {
		return "", ErrDecrypt
	}
	plain, err := k.aead.Open(nil, sealed[1:1+n], sealed[1+n:], sealed[:1])
	if err != nil {
		return "", ErrDecrypt
	}
	return string(plain), nil
}

// TokenPrefixLen is how much of a token secret is kept in clear to tell tokens apart.
const TokenPrefixLen = 8

// tokenRandomBytes gives 43 URL-safe characters after "sk-".
const tokenRandomBytes = 32

// NewToken returns a fresh secret ("sk-" + 43 URL-safe characters) and its display prefix.
func NewToken() (secret, prefix string) {
	b := make([]byte, tokenRandomBytes)
	rand.Read(b)
	secret = "sk-" + base64.RawURLEncoding.EncodeToString(b)
	return secret, secret[:TokenPrefixLen]
}

// HashToken is the keyed hash stored instead of the secret. Lookups compare
// hashes inside the database's unique index; CompareHash is for callers that
// hold both.
func (k *Keys) HashToken(secret string) []byte {
	mac := k.macs.Get().(hash.Hash)
	defer k.macs.Put(mac)
	mac.Reset()
	mac.Write([]byte(secret))
	return mac.Sum(make([]byte, 0, sha256.Size))
}

// CompareHash compares two hashes in constant time.
func CompareHash(a, b []byte) bool { return hmac.Equal(a, b) }

// ValidTokenSyntax reports whether s could be a secret made by NewToken, so
// malformed tokens are refused without a database lookup.
func ValidTokenSyntax(s string) bool {
	const want = 3 + 43
	if len(s) != want || !strings.HasPrefix(s, "sk-") {
		return false
	}
	for i := 3; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// BearerToken extracts the credential from an Authorization header value;
// the scheme is case-insensitive, as RFC 9110 says.
func BearerToken(header string) (string, bool) {
	const scheme = "bearer "
	if len(header) <= len(scheme) || !strings.EqualFold(header[:len(scheme)], scheme) {
		return "", false
	}
	token := strings.TrimSpace(header[len(scheme):])
	return token, token != ""
}

// KeyHint shows enough of an upstream key to recognise it: "sk-...abcd".
func KeyHint(key string) string {
	const tail = 4
	if len(key) <= 2*tail {
		return "..."
	}
	head := ""
	if i := strings.IndexByte(key, '-'); i > 0 && i <= 8 {
		head = key[:i+1]
	}
	return head + "..." + key[len(key)-tail:]
}
