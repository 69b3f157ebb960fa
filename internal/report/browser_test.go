package report

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// chromium finds Debian's chromium (make test installs it); none is a failure.
func chromium(t testing.TB) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("chromium not found: install Debian's chromium (make test does: make chromium)")
	return ""
}

// headless loads a page in headless Chromium and returns its DOM after layout, and
// what the browser logged from the page (console messages, load errors).
func headless(t testing.TB, browser, page string, args ...string) (dom, log string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	all := append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-logging=stderr", "--v=0",
		"--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, browser, append(all, "file://"+page)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", args, err, errb.String())
	}
	return out.String(), errb.String()
}

// The reports open in a real browser, offline, without an error: their outcome, their
// charts and a screenshot under the test's temp dir.
func TestReportsRenderInChromium(t *testing.T) {
	browser := chromium(t)
	dir := t.TempDir()
	for name, r := range map[string]Release{
		"promoted":    fromFile(t, "release_promoted.json"),
		"rolled-back": fromFile(t, "release_rolled_back_rate_judge.json"),
		"aborted":     fromFile(t, "path_aborted_canary.json"),
		"long":        longRelease(3000),
	} {
		t.Run(name, func(t *testing.T) {
			page := filepath.Join(dir, name+".html")
			var b bytes.Buffer
			if err := Write(&b, r); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(page, b.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			dom, log := headless(t, browser, page, "--dump-dom")
			for _, line := range strings.Split(log, "\n") {
				if strings.Contains(line, "CONSOLE") || strings.Contains(line, "Uncaught") || strings.Contains(line, "net::ERR") {
					t.Errorf("the browser logged: %s", line)
				}
			}
			if !strings.Contains(dom, `id="outcome"`) || strings.Count(dom, "<svg") < 2 {
				t.Errorf("the rendered page lacks its outcome or its charts:\n%.400s", dom)
			}
			shot := filepath.Join(dir, name+".png")
			headless(t, browser, page, "--screenshot="+shot, "--window-size=1100,2400", "--hide-scrollbars")
			if st, err := os.Stat(shot); err != nil || st.Size() < 10_000 {
				t.Fatalf("screenshot %s: %v", shot, err)
			}
			t.Logf("screenshot: %s", shot)
		})
	}
}

// BenchmarkReportInChromium: headless Chromium loading and laying out the report of
// a 3,000-round release (browser start included).
func BenchmarkReportInChromium(b *testing.B) {
	browser := chromium(b)
	page := filepath.Join(b.TempDir(), "long.html")
	var buf bytes.Buffer
	if err := Write(&buf, longRelease(3000)); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(page, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		headless(b, browser, page, "--dump-dom")
	}
}
