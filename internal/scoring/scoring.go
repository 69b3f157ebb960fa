// Package scoring speaks MLflow's model-serving protocol: the JSON bodies of
// POST /invocations, a client for it, and the CSV evaluation sets sent through it.
package scoring

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Request is the body of POST /invocations. Clients send DataframeSplit; servers also
// accept Instances, a bare list of rows in the model's column order.
type Request struct {
	DataframeSplit *DataframeSplit `json:"dataframe_split,omitempty"`
	Instances      [][]float64     `json:"instances,omitempty"`
}

// DataframeSplit is a pandas DataFrame in "split" orientation: named columns and rows.
type DataframeSplit struct {
	Columns []string    `json:"columns"`
	Data    [][]float64 `json:"data"`
}

// Response is the body of a successful POST /invocations, one prediction per row.
type Response struct {
	Predictions []Prediction `json:"predictions"`
}

// ErrorResponse is MLflow's body for a failed request.
type ErrorResponse struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

// Prediction is one predicted class label. MLflow models answer with numbers (an
// sklearn classifier's class indices) or strings; both become the label's text, with
// numbers in canonical form (1.0 becomes "1") so they compare equal to dataset labels.
type Prediction string

// UnmarshalJSON accepts a JSON number or string.
func (p *Prediction) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*p = Prediction(s)
		return nil
	}
	f, err := strconv.ParseFloat(string(b), 64)
	if err != nil {
		return fmt.Errorf("prediction %s is neither a number nor a string", truncate(b, 64))
	}
	*p = Prediction(strconv.FormatFloat(f, 'g', -1, 64))
	return nil
}

// MarshalJSON writes a numeric label as a JSON number, as MLflow's sklearn flavour
// does, and any other label as a string.
func (p Prediction) MarshalJSON() ([]byte, error) {
	if f, err := strconv.ParseFloat(string(p), 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		return []byte(strconv.FormatFloat(f, 'g', -1, 64)), nil
	}
	return json.Marshal(string(p))
}

// CanonicalLabel returns a numeric label in canonical form ("1.0" becomes "1") and any
// other label unchanged, so labels from a CSV file and from a model compare equal.
func CanonicalLabel(s string) string {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return s
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// StatusError is a non-2xx answer from a model server.
type StatusError struct {
	StatusCode int
	// Body is the start of the response body, for the operator's eyes.
	Body string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("model server answered %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Body)
}

// maxResponseBytes bounds how much of a model server's answer is read.
const maxResponseBytes = 32 << 20

// Client calls model servers. The zero value uses http.DefaultClient.
type Client struct {
	// HTTP sends the requests; nil means http.DefaultClient. Set its Timeout or pass
	// contexts with deadlines: a model server that never answers blocks a call.
	HTTP *http.Client
	// Header is added to every request (for example a routing key for a gateway).
	Header http.Header
}

// Predict sends rows, named by columns, to baseURL+"/invocations" and returns one
// class label per row. A non-2xx answer is a *StatusError.
func (c *Client) Predict(ctx context.Context, baseURL string, columns []string, rows [][]float64) ([]string, error) {
	invocationsURL := strings.TrimRight(baseURL, "/") + "/invocations"
	resp, err := c.Invoke(ctx, invocationsURL, &Request{DataframeSplit: &DataframeSplit{Columns: columns, Data: rows}})
	if err != nil {
		return nil, err
	}
	if len(resp.Predictions) != len(rows) {
		return nil, fmt.Errorf("invoke %s: %d predictions for %d rows", redact(invocationsURL), len(resp.Predictions), len(rows))
	}
	labels := make([]string, len(resp.Predictions))
	for i, p := range resp.Predictions {
		labels[i] = string(p)
	}
	return labels, nil
}

// Invoke POSTs req to url, the full invocations URL, and decodes the answer. It also
// accepts MLflow 1.x's bare list of predictions. A non-2xx answer is a *StatusError.
func (c *Client) Invoke(ctx context.Context, invocationsURL string, req *Request) (*Response, error) {
	url := redact(invocationsURL)
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request for %s: %w", url, err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, invocationsURL, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("invoke %s: %w", url, err)
	}
	for k, vs := range c.Header {
		for _, v := range vs {
			hreq.Header.Add(k, v)
		}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	hresp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("invoke model server: %w", err)
	}
	defer hresp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(hresp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read answer of %s: %w", url, err)
	}
	if hresp.StatusCode < 200 || hresp.StatusCode > 299 {
		return nil, &StatusError{StatusCode: hresp.StatusCode, Body: string(truncate(raw, 512))}
	}
	if len(raw) > maxResponseBytes {
		return nil, fmt.Errorf("answer of %s exceeds %d bytes", url, maxResponseBytes)
	}
	var resp Response
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		err = json.Unmarshal(raw, &resp.Predictions)
	} else {
		err = json.Unmarshal(raw, &resp)
		if err == nil && resp.Predictions == nil {
			err = errors.New(`no "predictions" field`)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("decode answer of %s: %w (body starts %q)", url, err, truncate(raw, 128))
	}
	return &resp, nil
}

// redact hides a password in u, so errors never carry one.
func redact(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return u
}

func truncate(b []byte, n int) []byte {
	if len(b) <= n {
		return b
	}
	return b[:n]
}
