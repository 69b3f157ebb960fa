package report

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func render(t *testing.T, r Release) string {
	t.Helper()
	var b bytes.Buffer
	if err := Write(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func fromFile(t *testing.T, name string) Release {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "workflows", "testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := FromHistory(f)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReportsOfRecordedReleases(t *testing.T) {
	for _, c := range []struct {
		file string
		want []string
	}{
		{"release_promoted.json", []string{`class="outcome promoted"`, "Promoted", "approved by alice"}},
		{"release_rolled_back_rate_judge.json", []string{`class="outcome rolled-back"`, "Rolled back", "rollback at 20"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			r := fromFile(t, c.file)
			html := render(t, r)
			for _, w := range c.want {
				if !strings.Contains(html, w) {
					t.Errorf("report lacks %q", w)
				}
			}
		})
	}
}
