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

// Every recorded history (workflows/testdata, the replay test's) that ends in a result
// draws a report with its outcome first.
func TestEveryRecordedReleaseDraws(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "workflows", "testdata", "*.json"))
	if err != nil || len(files) < 15 {
		t.Fatalf("%d recorded histories: %v", len(files), err)
	}
	drawn := 0
	for _, f := range files {
		fh, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := FromHistory(fh)
		fh.Close()
		if err != nil {
			continue // a run that continued as new has no result of its own
		}
		html := render(t, r)
		if want := `class="outcome ` + build(r).OutcomeClass + `"`; r.Status.Outcome == "" || !strings.Contains(html, want) {
			t.Errorf("%s: outcome %q, page lacks %s", filepath.Base(f), r.Status.Outcome, want)
		}
		drawn++
	}
	if drawn < 15 {
		t.Fatalf("only %d recorded releases drew", drawn)
	}
}

func TestReportsOfRecordedReleases(t *testing.T) {
	for _, c := range []struct {
		file string
		want []string
	}{
		{"release_promoted.json", []string{`class="outcome promoted"`, "Promoted", "approved by alice"}},
		{"release_rolled_back_rate_judge.json", []string{`class="outcome rolled-back"`, "Rolled back", "rollback at 20"}},
		{"path_aborted_canary.json", []string{`class="outcome rolled-back"`, "aborted by", "<td>abort"}},
		{"path_rolled_back_watch.json", []string{`class="outcome rolled-back"`, "watching", "Error budget"}},
		{"path_paused_resumed.json", []string{`class="outcome promoted"`, "<td>pause", "<td>resume"}},
		{"storm_approval_run14.json", []string{`class="outcome promoted"`, "14 workflow runs (continue-as-new)"}},
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
