package stack

import (
	"context"
	"fmt"

	"go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/sdk/client"
	"google.golang.org/protobuf/encoding/protojson"
)

// HistoryJSON returns a workflow's latest run's history in the JSON form that
// `temporal workflow show --output json` writes and replay tests read.
func HistoryJSON(ctx context.Context, c client.Client, workflowID string) ([]byte, error) {
	it := c.GetWorkflowHistory(ctx, workflowID, "", false, enums.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	var h historypb.History
	for it.HasNext() {
		e, err := it.Next()
		if err != nil {
			return nil, fmt.Errorf("read history of %s: %w", workflowID, err)
		}
		h.Events = append(h.Events, e)
	}
	return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(&h)
}
