package migrate

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
)

// Env is one env block of atlas.hcl: where a dialect's desired schema and
// migrations live, and which dev database plans them.
type Env struct {
	Dialect Dialect
	Src     string // path of schema.sql
	Dir     string // path of the migration directory
	DevURL  string
}

// atlasFile is the part of atlas.hcl we read; other blocks and attributes
// are for the atlas CLI and are ignored.
type atlasFile struct {
	Envs []struct {
		Name      string `hcl:"name,label"`
		Src       string `hcl:"src"`
		Dev       string `hcl:"dev"`
		Migration struct {
			Dir    string   `hcl:"dir"`
			Remain hcl.Body `hcl:",remain"`
		} `hcl:"migration,block"`
		Remain hcl.Body `hcl:",remain"`
	} `hcl:"env,block"`
	Remain hcl.Body `hcl:",remain"`
}

// LoadConfig reads the env blocks of an atlas.hcl file, one per dialect
// (named "sqlite" and "postgres"). Relative file:// paths are resolved from
// the file's directory. Expressions may call getenv(name).
func LoadConfig(path string) ([]Env, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	file, diags := hclsyntax.ParseConfig(src, path, hcl.InitialPos)
	if diags.HasErrors() {
		return nil, diags
	}
	var doc atlasFile
	if diags := gohcl.DecodeBody(file.Body, evalContext(), &doc); diags.HasErrors() {
		return nil, diags
	}
	base := filepath.Dir(path)
	envs := make([]Env, 0, len(doc.Envs))
	for _, e := range doc.Envs {
		d, err := ParseDialect(e.Name)
		if err != nil {
			return nil, fmt.Errorf("%s: env %q: %w", path, e.Name, err)
		}
		env := Env{Dialect: d, DevURL: e.Dev}
		if env.Src, err = localPath(base, e.Src); err != nil {
			return nil, fmt.Errorf("%s: env %q: src: %w", path, e.Name, err)
		}
		if env.Dir, err = localPath(base, e.Migration.Dir); err != nil {
			return nil, fmt.Errorf("%s: env %q: migration dir: %w", path, e.Name, err)
		}
		envs = append(envs, env)
	}
	return envs, nil
}

// selectEnvs loads the config and keeps the envs of dialects (all when empty).
func selectEnvs(path string, dialects []Dialect) ([]Env, error) {
	envs, err := LoadConfig(path)
	if err != nil || len(dialects) == 0 {
		return envs, err
	}
	for _, d := range dialects {
		if !slices.ContainsFunc(envs, func(e Env) bool { return e.Dialect == d }) {
			return nil, fmt.Errorf("%s: no env %q", path, d)
		}
	}
	return slices.DeleteFunc(envs, func(e Env) bool { return !slices.Contains(dialects, e.Dialect) }), nil
}

func localPath(base, u string) (string, error) {
	p, ok := strings.CutPrefix(u, "file://")
	if !ok {
		return "", fmt.Errorf("%q: want a file:// URL", u)
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(base, p)
	}
	return p, nil
}

// evalContext offers getenv, as the atlas CLI does.
func evalContext() *hcl.EvalContext {
	getenv := function.New(&function.Spec{
		Params: []function.Parameter{{Name: "name", Type: cty.String}},
		Type:   function.StaticReturnType(cty.String),
		Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
			return cty.StringVal(os.Getenv(args[0].AsString())), nil
		},
	})
	return &hcl.EvalContext{Functions: map[string]function.Function{"getenv": getenv}}
}
