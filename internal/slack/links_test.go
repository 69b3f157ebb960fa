package slack

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mlrelease/mlrelease/internal/notify"
)

// The release's opening message and its approval request link to its report and
// to the Temporal Web UI.
func TestMessagesLinkToTheReport(t *testing.T) {
	m := notify.Message{ReleaseID: "release/wine", Model: "wine", Champion: "1", Candidate: "2", Stage: "canary",
		Approval: &notify.Approval{Approvers: []string{"alice"}, Quorum: 1}}
	l := links{webUI: "http://localhost:8233", report: "http://worker:8090/"}
	for name, blocks := range map[string]any{"opening": openingBlocks(m, l), "approval": approvalBlocks(m, l)} {
		b, err := json.Marshal(blocks)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"http://worker:8090/releases/wine", "http://localhost:8233/namespaces/default/workflows/release%2Fwine"} {
			if !strings.Contains(string(b), want) {
				t.Errorf("%s message lacks %s: %s", name, want, b)
			}
		}
	}
	if b, _ := json.Marshal(openingBlocks(m, links{})); strings.Contains(string(b), "/releases/") {
		t.Error("a link with no report URL")
	}
}
