package plan

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestApprovalGroupsQuorumFourEyes(t *testing.T) {
	a := Approval{Required: true, Approvers: []string{"U0ALICE"}, ApproverGroups: []string{"S0REL"}, Quorum: 2, FourEyes: true}
	assert.True(t, a.Allows("U0ALICE"))
	assert.True(t, a.Allows("U0BOB", "S0OTHER", "S0REL"), "a member of an approver group")
	assert.False(t, a.Allows("U0BOB", "S0OTHER"))
	assert.False(t, a.Allows("", "S0REL"))
	assert.Equal(t, 2, a.Needed())
	assert.Equal(t, 1, Approval{}.Needed())

	base := "model: m\nanalysis:\n  metrics:\n    - {name: e, query: 'up', max: 1}\napproval:\n"
	_, err := Parse([]byte(base + "  required: true\n  approverGroups: [S0REL]\n  quorum: 2\n  fourEyes: true\n"))
	require.NoError(t, err, "a group alone may approve a required release")
	_, err = Parse([]byte(base + "  required: true\n  approvers: [a, b]\n  quorum: 3\n"))
	require.ErrorContains(t, err, "approval.quorum: 3 is more than the 2 approvers listed")
	_, err = Parse([]byte(base + "  required: true\n  approvers: [a]\n  quorum: -1\n"))
	require.ErrorContains(t, err, "approval.quorum: -1 must not be negative")
	_, err = Parse([]byte(base + "  required: true\n  approverGroups: ['']\n"))
	require.ErrorContains(t, err, "approval.approverGroups[0]")
	_, err = Parse([]byte(base + "  required: true\n  approvers: [a]\n  unsigned: true\n  allowedSigners: team.allowed\n"))
	require.ErrorContains(t, err, `approval.unsigned: true conflicts with approval.allowedSigners "team.allowed"`)
	p, err := Parse([]byte(base + "  required: true\n  approvers: [a]\n  allowedSigners: team.allowed\n"))
	require.NoError(t, err)
	require.Equal(t, "team.allowed", p.Approval.AllowedSigners)
}
