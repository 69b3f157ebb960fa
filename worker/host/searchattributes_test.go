package host

import (
	"fmt"
	"strings"
	"testing"

	"go.temporal.io/api/serviceerror"

	"github.com/mlrelease/mlrelease/workflows"
)

// Where the operator API is not this client's (Temporal Cloud), the worker says what
// to run there, for every attribute, with its type.
func TestSearchAttributeAdvice(t *testing.T) {
	for _, err := range []error{serviceerror.NewPermissionDenied("no", ""), fmt.Errorf("add: %w", serviceerror.NewUnimplemented("not here"))} {
		if !notHere(err) {
			t.Errorf("notHere(%v) = false", err)
		}
	}
	if notHere(serviceerror.NewUnavailable("down")) || notHere(nil) {
		t.Error("an unavailable server is a failure, not another control plane")
	}
	advice := searchAttributeAdvice("prod", workflows.SearchAttributes)
	for _, want := range []string{"temporal operator search-attribute create --namespace prod", "tcld namespace search-attributes add --namespace prod",
		"--search-attribute 'MlreleaseCanaryWeight=Int'", "--name MlreleaseModel --type Keyword"} {
		if !strings.Contains(advice, want) {
			t.Errorf("advice %q lacks %q", advice, want)
		}
	}
}
