package scoring

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func writeCSV(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "set.csv")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o644))
	return path
}

func TestLoadCSV(t *testing.T) {
	path := writeCSV(t, "a,b,label\n1,2.5,0\n-3,4e2,1.0\n 5 , 6 ,setosa\n")
	ds, err := LoadCSV(path)
	require.NoError(t, err)
	assert.Equal(t, []string{"a", "b"}, ds.Columns)
	assert.Equal(t, [][]float64{{1, 2.5}, {-3, 400}, {5, 6}}, ds.Rows)
	assert.Equal(t, []string{"0", "1", "setosa"}, ds.Labels, "numeric labels are canonical")
}

func TestLoadCSVLabelAnywhere(t *testing.T) {
	ds, err := LoadCSV(writeCSV(t, "label,a\n2,7\n"))
	require.NoError(t, err)
	assert.Equal(t, []string{"a"}, ds.Columns)
	assert.Equal(t, [][]float64{{7}}, ds.Rows)
	assert.Equal(t, []string{"2"}, ds.Labels)
}

func TestLoadCSVErrors(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []string // substrings of the error, after the file name
	}{
		{"empty", "", []string{"empty file"}},
		{"no label", "a,b\n1,2\n", []string{":1:", `no "label" column`}},
		{"only label", "label\n1\n", []string{":1:", "no feature columns"}},
		{"duplicate", "a,a,label\n1,2,0\n", []string{":1:", "column 2", `"a" appears twice`}},
		{"unnamed", "a,,label\n1,2,0\n", []string{":1:", "column 2 has no name"}},
		{"no rows", "a,label\n", []string{"no rows"}},
		{"not a number", "a,b,label\n1,2,0\n3,x,1\n", []string{":3:", "column 2", `("b")`, `"x" is not a finite number`}},
		{"nan", "a,label\nNaN,0\n", []string{":2:", "column 1", `("a")`, "not a finite number"}},
		{"empty field", "a,b,label\n1,,0\n", []string{":2:", "column 2", `""`}},
		{"empty label", "a,label\n1,\n", []string{":2:", "column 2", "empty label"}},
		{"field count", "a,b,label\n1,2,0\n1,2\n", []string{":3:", "wrong number of fields"}},
		{"bad quote", "a,label\n1,\"0\n", []string{":2:", "column"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeCSV(t, tc.body)
			_, err := LoadCSV(path)
			require.Error(t, err)
			msg := err.Error()
			assert.True(t, strings.HasPrefix(msg, path), "error %q should start with the file name", msg)
			for _, w := range tc.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

func TestLoadCSVMissingFile(t *testing.T) {
	_, err := LoadCSV(filepath.Join(t.TempDir(), "nope.csv"))
	require.ErrorIs(t, err, os.ErrNotExist)
	assert.Contains(t, err.Error(), "nope.csv")
}

func TestLoadDemoEvalSet(t *testing.T) {
	ds, err := LoadCSV("../../examples/demo/data/eval.csv")
	require.NoError(t, err)
	assert.Len(t, ds.Columns, 13)
	assert.Len(t, ds.Rows, 71)
	assert.Len(t, ds.Labels, 71)
}
