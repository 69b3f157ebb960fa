// Package model is the demo's classifier: a multinomial logistic (softmax) regression
// stored as a JSON weights file, its trainer, and an MLflow-compatible server for it
// that can inject errors, latency and degraded weights on purpose.
package model

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// Weights is a trained model as stored on disk. Predict standardises a row with Mean
// and Std, then picks the class with the largest score Weights[k]·x + Bias[k].
type Weights struct {
	Version string    `json:"version"`
	Columns []string  `json:"columns"`
	Classes []string  `json:"classes"`
	Mean    []float64 `json:"mean"`
	Std     []float64 `json:"std"`
	// Weights has one row per class, one column per feature.
	Weights [][]float64 `json:"weights"`
	Bias    []float64   `json:"bias"`
}

// Load reads and checks a weights file.
func Load(path string) (*Weights, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load model: %w", err)
	}
	var w Weights
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	if err := w.Validate(); err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return &w, nil
}

// Save writes w as indented JSON.
func (w *Weights) Save(path string) error {
	b, err := json.MarshalIndent(w, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// Validate reports the first inconsistency between the fields' shapes.
func (w *Weights) Validate() error {
	d, k := len(w.Columns), len(w.Classes)
	switch {
	case d == 0:
		return fmt.Errorf("no columns")
	case k < 2:
		return fmt.Errorf("%d classes, want at least 2", k)
	case len(w.Mean) != d || len(w.Std) != d:
		return fmt.Errorf("mean has %d and std %d values for %d columns", len(w.Mean), len(w.Std), d)
	case len(w.Weights) != k || len(w.Bias) != k:
		return fmt.Errorf("weights has %d rows and bias %d values for %d classes", len(w.Weights), len(w.Bias), k)
	}
	for i, row := range w.Weights {
		if len(row) != d {
			return fmt.Errorf("weights row %d (class %q) has %d values for %d columns", i, w.Classes[i], len(row), d)
		}
	}
	for j, s := range w.Std {
		if !(s > 0) {
			return fmt.Errorf("std of column %q is %v, want > 0", w.Columns[j], s)
		}
	}
	return nil
}

// Predict returns the class of one row given in w.Columns order. It panics if the row
// has the wrong length; use Align to order rows from named columns.
func (w *Weights) Predict(row []float64) string {
	return w.Classes[w.argmax(row)]
}

// Probabilities returns the softmax probability of each class in w.Classes order.
func (w *Weights) Probabilities(row []float64) []float64 {
	s := w.scores(row)
	m := slices.Max(s)
	var sum float64
	for k := range s {
		s[k] = math.Exp(s[k] - m)
		sum += s[k]
	}
	for k := range s {
		s[k] /= sum
	}
	return s
}

func (w *Weights) argmax(row []float64) int {
	s := w.scores(row)
	best := 0
	for k := range s {
		if s[k] > s[best] {
			best = k
		}
	}
	return best
}

func (w *Weights) scores(row []float64) []float64 {
	if len(row) != len(w.Columns) {
		panic(fmt.Sprintf("model: row has %d values for %d columns", len(row), len(w.Columns)))
	}
	s := make([]float64, len(w.Classes))
	for k := range s {
		z := w.Bias[k]
		for j, v := range row {
			z += w.Weights[k][j] * (v - w.Mean[j]) / w.Std[j]
		}
		s[k] = z
	}
	return s
}

// Align returns, for each of the model's columns, its index among columns, so that
// row[idx[j]] is the model's j-th feature. A missing column is an error.
func (w *Weights) Align(columns []string) ([]int, error) {
	at := make(map[string]int, len(columns))
	for i, c := range columns {
		at[c] = i
	}
	idx := make([]int, len(w.Columns))
	for j, c := range w.Columns {
		i, ok := at[c]
		if !ok {
			return nil, fmt.Errorf("column %q is missing; the model needs %v", c, w.Columns)
		}
		idx[j] = i
	}
	return idx, nil
}

// Accuracy returns the share of ds's rows whose label w predicts.
func (w *Weights) Accuracy(ds *scoring.Dataset) (float64, error) {
	idx, err := w.Align(ds.Columns)
	if err != nil {
		return 0, err
	}
	x := make([]float64, len(idx))
	correct := 0
	for i, row := range ds.Rows {
		for j, at := range idx {
			x[j] = row[at]
		}
		if scoring.CanonicalLabel(w.Predict(x)) == ds.Labels[i] {
			correct++
		}
	}
	return float64(correct) / float64(len(ds.Rows)), nil
}

// degradeNoise is the size of the noise that replaces a fully degraded model's
// weights, relative to the root mean square of the honest weights. It is large so that
// degradations of 0.3 and more already cost clearly visible accuracy.
const degradeNoise = 4

// Degrade returns a copy of w corrupted by amount (0 keeps w, 1 leaves pure noise):
// each weight and bias becomes (1-amount)·w + amount·degradeNoise·rms·z with z drawn
// from a normal distribution seeded by seed, so the same arguments corrupt the same way.
func (w *Weights) Degrade(amount float64, seed uint64) *Weights {
	out := w.clone()
	if amount <= 0 {
		return out
	}
	amount = min(amount, 1)
	var ss float64
	n := 0
	for _, row := range w.Weights {
		for _, v := range row {
			ss += v * v
			n++
		}
	}
	scale := degradeNoise * math.Sqrt(ss/float64(n))
	rng := rand.New(rand.NewPCG(seed, 0x6465677261646521))
	for k := range out.Weights {
		for j := range out.Weights[k] {
			out.Weights[k][j] = (1-amount)*out.Weights[k][j] + amount*scale*rng.NormFloat64()
		}
		out.Bias[k] = (1-amount)*out.Bias[k] + amount*scale*rng.NormFloat64()
	}
	return out
}

func (w *Weights) clone() *Weights {
	out := *w
	out.Columns = slices.Clone(w.Columns)
	out.Classes = slices.Clone(w.Classes)
	out.Mean = slices.Clone(w.Mean)
	out.Std = slices.Clone(w.Std)
	out.Bias = slices.Clone(w.Bias)
	out.Weights = make([][]float64, len(w.Weights))
	for k := range w.Weights {
		out.Weights[k] = slices.Clone(w.Weights[k])
	}
	return &out
}
