package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// Prediction is one row of a model's answer as the gateway compares, scores and joins
// it with feedback.
//
// The score is a number in [0, 1] whose distribution per variant feeds the
// mlrelease_gateway_prediction_score histogram (and so output drift):
//   - a row with class probabilities (a list of numbers, OIP's [N, K] tensors, or a
//     record's "probabilities"/"scores"): the largest probability, clamped to [0, 1];
//     the class is the index of that probability unless the record names one;
//   - a record's "probability"/"score" number: that number, clamped to [0, 1];
//   - a bare number x (a class index, a regression, a binary probability): x/(1+x)
//     for x ≥ 0 and 0 for x < 0, so every non-negative value keeps its own place on a
//     bounded scale (0 → 0, 0.5 → 0.33, 1 → 0.5, 2 → 0.67, 9 → 0.9);
//   - a string label alone: no score (the class still counts for agreement and feedback).
type Prediction struct {
	// Class is the predicted label in canonical form (scoring.CanonicalLabel); empty
	// when the row names none.
	Class    string
	Score    float64
	HasScore bool
	// Numeric is set when the row is a bare number, Value; two numeric rows agree
	// within a tolerance rather than only when equal.
	Numeric bool
	Value   float64
}

// Agree says whether a shadow's prediction matches the primary's: numeric rows within
// tol relative to their magnitude (absolute for magnitudes up to 1), any other rows
// when they name the same class.
func Agree(a, b Prediction, tol float64) bool {
	if a.Numeric && b.Numeric {
		return math.Abs(a.Value-b.Value) <= tol*max(1, math.Abs(a.Value), math.Abs(b.Value))
	}
	return a.Class != "" && a.Class == b.Class
}

// maxPredictionRows bounds the rows parsed from one answer: a batch of a million rows
// is still proxied, but only its first rows are compared and scored.
const maxPredictionRows = 1024

var errNoPredictions = errors.New(`neither "predictions" nor "outputs" in the answer`)

// ParsePredictions reads the rows of a model server's answer in MLflow's scoring
// protocol ({"predictions": [...]}, or 1.x's bare list) or the Open Inference
// Protocol v2 ({"outputs": [{"shape": [...], "data": [...]}]}).
func ParsePredictions(body []byte) ([]Prediction, error) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, errNoPredictions
	}
	if body[0] == '[' {
		return parseMLflowRows(body)
	}
	if preds, ok := parseNumericPredictions(body); ok {
		return preds, nil
	}
	return parseEnvelope(body)
}

// parseEnvelope is ParsePredictions for an object, by encoding/json.
func parseEnvelope(body []byte) ([]Prediction, error) {
	var env struct {
		Predictions json.RawMessage `json:"predictions"`
		Outputs     []oipOutput     `json:"outputs"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return nil, err
	}
	switch {
	case len(env.Predictions) > 0 && !bytes.Equal(env.Predictions, []byte("null")):
		return parseMLflowRows(env.Predictions)
	case len(env.Outputs) > 0:
		return parseOIP(env.Outputs)
	}
	return nil, errNoPredictions
}

func parseMLflowRows(raw json.RawMessage) ([]Prediction, error) {
	var rows []json.RawMessage
	if err := json.Unmarshal(raw, &rows); err != nil {
		return nil, fmt.Errorf("predictions: %w", err)
	}
	if len(rows) > maxPredictionRows {
		rows = rows[:maxPredictionRows]
	}
	out := make([]Prediction, len(rows))
	for i, row := range rows {
		p, err := parseRow(row)
		if err != nil {
			return nil, fmt.Errorf("prediction %d: %w", i, err)
		}
		out[i] = p
	}
	return out, nil
}

// parseRow reads one MLflow prediction: a number, a string, a list of class
// probabilities, or a record.
func parseRow(raw json.RawMessage) (Prediction, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return Prediction{}, errors.New("empty")
	}
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return Prediction{}, err
		}
		return labelPrediction(s), nil
	case '[':
		var probs []float64
		if err := json.Unmarshal(raw, &probs); err != nil {
			return Prediction{}, fmt.Errorf("a list that is not class probabilities: %w", err)
		}
		return probabilityPrediction(probs)
	case '{':
		return parseRecord(raw)
	case 'n':
		return Prediction{}, errors.New("null")
	}
	var x float64
	if err := json.Unmarshal(raw, &x); err != nil {
		return Prediction{}, err
	}
	return numericPrediction(x), nil
}

// Keys of a record (pandas "records" orientation) that carry the class and the score.
var (
	classKeys       = []string{"label", "predicted_label", "prediction", "class", "predicted_class"}
	scoreKeys       = []string{"probability", "score"}
	probabilityKeys = []string{"probabilities", "scores", "predict_proba"}
)

func parseRecord(raw json.RawMessage) (Prediction, error) {
	var rec map[string]json.RawMessage
	if err := json.Unmarshal(raw, &rec); err != nil {
		return Prediction{}, err
	}
	var p Prediction
	found := false
	for _, k := range probabilityKeys {
		if v, ok := rec[k]; ok {
			var probs []float64
			if err := json.Unmarshal(v, &probs); err != nil {
				return Prediction{}, fmt.Errorf("%s: %w", k, err)
			}
			var err error
			if p, err = probabilityPrediction(probs); err != nil {
				return Prediction{}, fmt.Errorf("%s: %w", k, err)
			}
			found = true
			break
		}
	}
	for _, k := range scoreKeys {
		if v, ok := rec[k]; ok && !found {
			var s float64
			if err := json.Unmarshal(v, &s); err != nil {
				return Prediction{}, fmt.Errorf("%s: %w", k, err)
			}
			p.Score, p.HasScore, found = clamp01(s), true, true
			break
		}
	}
	for _, k := range classKeys {
		v, ok := rec[k]
		if !ok {
			continue
		}
		c, err := parseRow(v)
		if err != nil || c.Class == "" {
			return Prediction{}, fmt.Errorf("%s is not a label", k)
		}
		p.Class = c.Class
		if !found {
			p = c // a record that only names its prediction is that prediction
		}
		found = true
		break
	}
	if !found {
		return Prediction{}, fmt.Errorf("a record without any of %v, %v or %v", classKeys, scoreKeys, probabilityKeys)
	}
	return p, nil
}

// oipOutput is one output tensor of an Open Inference Protocol v2 answer.
type oipOutput struct {
	Name     string          `json:"name"`
	Shape    []int64         `json:"shape"`
	Datatype string          `json:"datatype"`
	Data     json.RawMessage `json:"data"`
}

// parseOIP reads the rows of the first output tensor: [N] or [N, 1] holds one label or
// number per row, [N, K] holds K class probabilities per row. When another output is
// an [N, K] probability tensor (as "predict" beside "predict_proba"), its largest
// probability becomes each row's score.
func parseOIP(outputs []oipOutput) ([]Prediction, error) {
	rows, err := oipRows(outputs[0])
	if err != nil {
		return nil, fmt.Errorf("output %q: %w", outputs[0].Name, err)
	}
	for _, o := range outputs[1:] {
		if len(o.Shape) != 2 || o.Shape[1] < 2 || o.Shape[0] != int64(len(rows)) || !bytes.HasPrefix(bytes.TrimSpace(o.Data), []byte("[")) {
			continue
		}
		probs, err := oipRows(o)
		if err != nil || len(probs) != len(rows) {
			continue
		}
		for i := range rows {
			if !rows[i].HasScore || rows[i].Numeric {
				rows[i].Score, rows[i].HasScore = probs[i].Score, probs[i].HasScore
			}
		}
		break
	}
	return rows, nil
}

func oipRows(o oipOutput) ([]Prediction, error) {
	flat, err := flatten(o.Data)
	if err != nil {
		return nil, err
	}
	n, k := int64(len(flat)), int64(1)
	switch {
	case len(o.Shape) == 0:
	case len(o.Shape) == 1:
		n = o.Shape[0]
	case len(o.Shape) == 2:
		n, k = o.Shape[0], o.Shape[1]
	default:
		return nil, fmt.Errorf("shape %v: only [N] and [N, K] tensors are read", o.Shape)
	}
	// Bounded first, so that n*k cannot overflow into a match.
	if n < 0 || k < 1 || n > int64(len(flat)) || k > int64(len(flat)) && n > 0 || n*k != int64(len(flat)) {
		return nil, fmt.Errorf("shape %v does not hold %d values", o.Shape, len(flat))
	}
	n = min(n, maxPredictionRows)
	out := make([]Prediction, n)
	for i := range n {
		row := flat[i*k : (i+1)*k]
		if k == 1 {
			if out[i], err = parseRow(row[0]); err != nil {
				return nil, fmt.Errorf("row %d: %w", i, err)
			}
			continue
		}
		probs := make([]float64, k)
		for j, v := range row {
			if err := json.Unmarshal(v, &probs[j]); err != nil {
				return nil, fmt.Errorf("row %d: probabilities: %w", i, err)
			}
		}
		if out[i], err = probabilityPrediction(probs); err != nil {
			return nil, fmt.Errorf("row %d: %w", i, err)
		}
	}
	return out, nil
}

// flatten reads OIP data, flat or nested one level (some servers nest by row).
func flatten(raw json.RawMessage) ([]json.RawMessage, error) {
	var top []json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, fmt.Errorf("data: %w", err)
	}
	out := make([]json.RawMessage, 0, len(top))
	for _, v := range top {
		v = bytes.TrimSpace(v)
		if len(v) > 0 && v[0] == '[' {
			var inner []json.RawMessage
			if err := json.Unmarshal(v, &inner); err != nil {
				return nil, fmt.Errorf("data: %w", err)
			}
			out = append(out, inner...)
			continue
		}
		out = append(out, v)
	}
	return out, nil
}

func labelPrediction(s string) Prediction {
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) && !math.IsNaN(f) {
		// "1" and 1 are the same label; a numeric string is still a label, not a score.
		return Prediction{Class: scoring.CanonicalLabel(s)}
	}
	return Prediction{Class: s}
}

func numericPrediction(x float64) Prediction {
	return Prediction{
		Class:    strconv.FormatFloat(x, 'g', -1, 64),
		Score:    NumericScore(x),
		HasScore: true,
		Numeric:  true,
		Value:    x,
	}
}

func probabilityPrediction(probs []float64) (Prediction, error) {
	if len(probs) == 0 {
		return Prediction{}, errors.New("no class probabilities")
	}
	best := 0
	for i, p := range probs {
		if math.IsNaN(p) {
			return Prediction{}, errors.New("a class probability is NaN")
		}
		if p > probs[best] {
			best = i
		}
	}
	return Prediction{Class: strconv.Itoa(best), Score: clamp01(probs[best]), HasScore: true}, nil
}

// NumericScore maps a bare numeric prediction onto [0, 1]: x/(1+x) for x ≥ 0, else 0.
func NumericScore(x float64) float64 {
	switch {
	case math.IsNaN(x) || x <= 0:
		return 0
	case math.IsInf(x, 1):
		return 1
	}
	return x / (1 + x)
}

func clamp01(x float64) float64 {
	if math.IsNaN(x) {
		return 0
	}
	return min(1, max(0, x))
}
