package proxy

import "testing"

func TestSafePath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]bool{
		"/v1/chat/completions":                  true,
		"/v1/models/ft:gpt-4o-mini:org:name:id": true,
		"/v1/files/file-a.b.c/content":          true,
		"/v1/x/...":                             true, // three dots name a file, not a parent
		"/v1/a%20b":                             true,
		"/v1//double":                           true,
		"/v1/":                                  true,
		"/v1/../manage/projects":                false,
		"/v1/./chat/completions":                false,
		"/v1/chat/..":                           false,
		"/v1/chat/.":                            false,
		"/v1/%2e%2e/manage/projects":            false,
		"/v1/%2E%2E/manage/projects":            false,
		"/v1/%2e/x":                             false,
		"/v1/.%2e/x":                            false,
		"/v1/..%2F..%2Fx":                       false,
		"/v1/chat%2fcompletions":                false,
		"/v1/%5c..":                             false,
		"/v1/a%5Cb":                             false,
		`/v1/..\x`:                              false,
		"/v1/%zz":                               false, // not an escape at all
		"/v1/%2":                                false,
	} {
		if got := safePath(path); got != want {
			t.Errorf("safePath(%q) = %v, want %v", path, got, want)
		}
	}
}
