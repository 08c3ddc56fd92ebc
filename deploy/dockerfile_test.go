package deploy_test

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction: its keyword in upper case and
// the rest of the line, continuation lines joined.
type instruction struct {
	keyword, args string
}

type stage struct {
	base, name   string
	instructions []instruction
}

// parseDockerfile reads the Dockerfile's stages. It knows just enough of the
// syntax for this repository's Dockerfile.
func parseDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		stages []stage
		line   string
	)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		text := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(text, "#") || (text == "" && line == "") {
			continue
		}
		if cont, ok := strings.CutSuffix(text, `\`); ok {
			line += cont + " "
			continue
		}
		line += text
		keyword, args, _ := strings.Cut(line, " ")
		keyword, args = strings.ToUpper(keyword), strings.TrimSpace(args)
		line = ""
		if keyword == "FROM" {
			fields := strings.Fields(args)
			s := stage{base: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				s.name = fields[2]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("%s: %s before FROM", path, keyword)
		}
		last := &stages[len(stages)-1]
		last.instructions = append(last.instructions, instruction{keyword, args})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return stages
}

// envPairs parses ENV's key=value form (values without spaces or quotes).
func envPairs(t *testing.T, args string) [][2]string {
	t.Helper()
	var pairs [][2]string
	for _, field := range strings.Fields(args) {
		k, v, ok := strings.Cut(field, "=")
		if !ok || strings.ContainsAny(v, `"'`) {
			t.Fatalf("ENV %s: only the unquoted key=value form is understood here", args)
		}
		pairs = append(pairs, [2]string{k, v})
	}
	return pairs
}

// execForm parses an instruction's JSON array form, as in ENTRYPOINT ["/llmproxy"].
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(in.args), &argv); err != nil {
		t.Fatalf("%s %s: want the exec (JSON array) form: %v", in.keyword, in.args, err)
	}
	return argv
}

// buildContext copies the repository as `docker build .` sends it: without
// what .dockerignore excludes. Only plain patterns are supported; Docker
// anchors them at the root and `*` does not cross a slash, as in filepath.Match.
func buildContext(t *testing.T, root string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	var patterns []string
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "!") || strings.Contains(line, "**") {
			t.Fatalf(".dockerignore: pattern %q: exceptions and ** are not supported by this test", line)
		}
		patterns = append(patterns, filepath.Clean(strings.TrimPrefix(line, "/")))
	}
	ignored := func(rel string) bool {
		return slices.ContainsFunc(patterns, func(p string) bool {
			ok, err := filepath.Match(p, rel)
			if err != nil {
				t.Fatalf(".dockerignore: pattern %q: %v", p, err)
			}
			return ok
		})
	}

	dst := t.TempDir()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		if ignored(rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.Mkdir(target, 0o755)
		case d.Type().IsRegular():
			return copyFile(path, target)
		default:
			t.Fatalf("build context: %s is neither a file nor a directory", rel)
			return nil
		}
	})
	if err != nil {
		t.Fatalf("copy the build context: %v", err)
	}
	return dst
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestDockerfile runs the build stage's commands on a build context made as
// Docker makes it, checks that what the final stage copies exists and that
// the binary is static (the final image has no libc), then checks the final
// stage's runtime settings against the binary and the compose file's needs.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	root := repoRoot(t)
	stages := parseDockerfile(t, filepath.Join(root, "Dockerfile"))
	if len(stages) != 2 || stages[0].name == "" {
		t.Fatalf("want a named build stage and a final stage, got %+v", stages)
	}
	build, final := stages[0], stages[1]
	if !strings.HasPrefix(build.base, "golang:1.26") {
		t.Errorf("build stage FROM %s, want golang:1.26 (go.mod's version)", build.base)
	}
	if !strings.HasPrefix(final.base, "gcr.io/distroless/static") {
		t.Errorf("final stage FROM %s, want distroless static", final.base)
	}

	// Build stage: WORKDIR is the context copy, which already holds every
	// file COPY brings in; ENV applies to the later RUNs, except OUT, the
	// output directory, redirected to a temporary one.
	contextDir := buildContext(t, root)
	out := t.TempDir()
	var outInImage string
	env := os.Environ()
	ran := 0
	for _, in := range build.instructions {
		switch in.keyword {
		case "WORKDIR", "COPY":
		case "ENV":
			for _, kv := range envPairs(t, in.args) {
				if kv[0] == "OUT" {
					outInImage = kv[1]
					kv[1] = out
				}
				env = append(env, kv[0]+"="+kv[1])
			}
		case "RUN":
			if strings.HasPrefix(in.args, "[") || strings.HasPrefix(in.args, "--") {
				t.Fatalf("RUN %s: only the shell form without flags is run here", in.args)
			}
			cmd := exec.Command("sh", "-c", in.args)
			cmd.Dir, cmd.Env = contextDir, env
			if output, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("RUN %s: %v\n%s", in.args, err, output)
			}
			ran++
		default:
			t.Fatalf("build stage: %s is not run by this test; extend it", in.keyword)
		}
	}
	if outInImage == "" || ran == 0 {
		t.Fatalf("build stage: want ENV OUT=<dir> and RUN lines writing there")
	}

	// Final stage: what it copies from the build stage, as whom, and how it runs.
	var (
		copied              = map[string]string{} // destination in the image -> source on disk
		chowned             = map[string]string{} // destination -> --chown owner
		user, entry, volume string
		cmdArgs             []string
		imageEnv            = map[string]string{}
		exposed             []string
	)
	for _, in := range final.instructions {
		switch in.keyword {
		case "COPY":
			fields := strings.Fields(in.args)
			var from, chown string
			for len(fields) > 2 && strings.HasPrefix(fields[0], "--") {
				name, value, _ := strings.Cut(fields[0], "=")
				switch name {
				case "--from":
					from = value
				case "--chown":
					chown = value
				default:
					t.Fatalf("COPY %s: flag %s is not checked by this test; extend it", in.args, name)
				}
				fields = fields[1:]
			}
			rest, ok := strings.CutPrefix(fields[0], outInImage+"/")
			if from != build.name || len(fields) != 2 || !ok {
				t.Fatalf("COPY %s: want COPY --from=%s %s/<file> <dest>", in.args, build.name, outInImage)
			}
			src := filepath.Join(out, rest)
			if _, err := os.Stat(src); err != nil {
				t.Errorf("COPY %s: the build stage did not make it: %v", in.args, err)
			}
			copied[fields[1]], chowned[fields[1]] = src, chown
		case "USER":
			user = in.args
		case "ENV":
			for _, kv := range envPairs(t, in.args) {
				imageEnv[kv[0]] = kv[1]
			}
		case "VOLUME":
			volume = in.args
		case "EXPOSE":
			exposed = append(exposed, strings.Fields(in.args)...)
		case "ENTRYPOINT":
			argv := execForm(t, in)
			if len(argv) != 1 {
				t.Fatalf("ENTRYPOINT %s: want the binary alone", in.args)
			}
			entry = argv[0]
		case "CMD":
			cmdArgs = execForm(t, in)
		default:
			t.Fatalf("final stage: %s is not checked by this test; extend it", in.keyword)
		}
	}

	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric non-root user", user)
	}
	if volume == "" || chowned[volume] != user {
		t.Errorf("VOLUME %q: want its directory copied with --chown=%s so the user can write a fresh volume (got %q)", volume, user, chowned[volume])
	}
	if path := imageEnv["DATABASE_PATH"]; volume == "" || !strings.HasPrefix(path, volume+"/") {
		t.Errorf("DATABASE_PATH=%q is not in the volume %q", path, volume)
	}
	if _, port, _ := strings.Cut(imageEnv["LISTEN_ADDR"], ":"); !slices.Contains(exposed, port) {
		t.Errorf("LISTEN_ADDR=%q: its port is not in EXPOSE %v", imageEnv["LISTEN_ADDR"], exposed)
	}
	if !slices.Equal(cmdArgs, []string{"serve"}) {
		t.Errorf("CMD %q, want [serve]", cmdArgs)
	}

	bin, ok := copied[entry]
	if !ok {
		t.Fatalf("ENTRYPOINT %q is not a file copied from the build stage (copied: %v)", entry, copied)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary is dynamically linked (%s): it cannot run on distroless static", p.Type)
		}
	}
	// The entrypoint and the image's command both run in the built binary.
	for _, args := range [][]string{{"--help"}, append(cmdArgs, "--help")} {
		output, err := exec.Command(bin, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(output), "Usage") {
			t.Errorf("%s %s: %v\n%s", entry, strings.Join(args, " "), err, output)
		}
	}
}
