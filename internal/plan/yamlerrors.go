package plan

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// YAML errors are reported all at once, in the plan's words: the decoder goes on past
// an unknown field, a value of the wrong type or a bad duration, and each message
// names the line and the field, never a Go type.

var (
	unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type (\S+)$`)
	wrongType    = regexp.MustCompile("^line (\\d+): cannot unmarshal !!(\\w+) `(.*)` into (\\S+)$")
)

// yamlErrors turns the decoder's error into one error a line, in the plan's words.
func yamlErrors(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("decode: %w", err)
	}
	out := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		out = append(out, errors.New(friendlyYAML(msg)))
	}
	return errors.Join(out...)
}

func friendlyYAML(msg string) string {
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("line %s: unknown field %q in %s: check its spelling and where it is indented", m[1], m[2], section(m[3]))
	}
	if m := wrongType.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("line %s: want %s, got %s %q", m[1], kind(m[4]), yamlKind(m[2]), m[3])
	}
	return msg
}

// section names a plan type as the YAML section it reads.
func section(goType string) string {
	name := goType[strings.LastIndex(goType, ".")+1:]
	switch name {
	case "Plan":
		return "the plan"
	case "PostPromotion":
		return "postPromotion"
	}
	if name == "" {
		return "the plan"
	}
	return strings.ToLower(name[:1]) + name[1:]
}

func kind(goType string) string {
	switch {
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping"
	}
	return "a " + section(goType) + " section"
}

func yamlKind(tag string) string {
	switch tag {
	case "str":
		return "the string"
	case "int", "float":
		return "the number"
	case "seq":
		return "a list"
	case "map":
		return "a mapping"
	}
	return tag
}
