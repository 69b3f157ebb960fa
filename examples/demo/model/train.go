package model

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

// Versions are the demo's two honest models, written by examples/demo/train. They
// differ in regularisation and training length, so a release from v1 to v2 is a
// genuine but harmless change.
var Versions = []TrainOptions{
	{Version: "v1", Epochs: 300, LearningRate: 0.5, L2: 0.01, Seed: 1},
	{Version: "v2", Epochs: 1500, LearningRate: 0.1, L2: 0.001, Seed: 2},
}

// TrainOptions are the hyper-parameters of Train.
type TrainOptions struct {
	Version string
	// Epochs is the number of full-batch gradient steps.
	Epochs int
	// LearningRate is the step size.
	LearningRate float64
	// L2 is the weight of the ridge penalty (L2/2)·‖W‖² (the bias is not penalised).
	L2 float64
	// Seed seeds the small random initial weights.
	Seed uint64
}

// Train fits a softmax regression to ds by plain full-batch gradient descent on the
// mean cross-entropy plus the L2 penalty. The same ds and options give the same weights.
func Train(ds *scoring.Dataset, opts TrainOptions) (*Weights, error) {
	if opts.Epochs <= 0 || !(opts.LearningRate > 0) || opts.L2 < 0 {
		return nil, fmt.Errorf("train: epochs %d and learning rate %v must be positive, l2 %v not negative", opts.Epochs, opts.LearningRate, opts.L2)
	}
	n, d := len(ds.Rows), len(ds.Columns)
	if n == 0 {
		return nil, fmt.Errorf("train: empty dataset")
	}
	classes := slices.Clone(ds.Labels)
	slices.SortFunc(classes, compareLabels)
	classes = slices.Compact(classes)
	if len(classes) < 2 {
		return nil, fmt.Errorf("train: %d classes in the labels, want at least 2", len(classes))
	}
	k := len(classes)
	y := make([]int, n)
	for i, l := range ds.Labels {
		y[i] = slices.Index(classes, l)
	}

	w := &Weights{
		Version: opts.Version,
		Columns: slices.Clone(ds.Columns),
		Classes: classes,
		Mean:    make([]float64, d),
		Std:     make([]float64, d),
		Weights: make([][]float64, k),
		Bias:    make([]float64, k),
	}
	for j := range d {
		var sum, sq float64
		for _, row := range ds.Rows {
			sum += row[j]
		}
		w.Mean[j] = sum / float64(n)
		for _, row := range ds.Rows {
			sq += (row[j] - w.Mean[j]) * (row[j] - w.Mean[j])
		}
		w.Std[j] = math.Sqrt(sq / float64(n))
		if w.Std[j] == 0 {
			w.Std[j] = 1 // a constant column carries no information; keep it harmless
		}
	}
	x := make([][]float64, n)
	for i, row := range ds.Rows {
		x[i] = make([]float64, d)
		for j, v := range row {
			x[i][j] = (v - w.Mean[j]) / w.Std[j]
		}
	}
	rng := rand.New(rand.NewPCG(opts.Seed, 0x747261696e))
	for c := range k {
		w.Weights[c] = make([]float64, d)
		for j := range d {
			w.Weights[c][j] = 0.01 * rng.NormFloat64()
		}
	}

	gradW := make([][]float64, k)
	for c := range gradW {
		gradW[c] = make([]float64, d)
	}
	gradB := make([]float64, k)
	p := make([]float64, k)
	for range opts.Epochs {
		for c := range k {
			clear(gradW[c])
		}
		clear(gradB)
		for i := range n {
			// softmax of the scores, shifted by their maximum for stability
			m := math.Inf(-1)
			for c := range k {
				z := w.Bias[c]
				for j := range d {
					z += w.Weights[c][j] * x[i][j]
				}
				p[c] = z
				m = max(m, z)
			}
			var sum float64
			for c := range k {
				p[c] = math.Exp(p[c] - m)
				sum += p[c]
			}
			for c := range k {
				g := p[c] / sum
				if c == y[i] {
					g--
				}
				gradB[c] += g
				for j := range d {
					gradW[c][j] += g * x[i][j]
				}
			}
		}
		for c := range k {
			w.Bias[c] -= opts.LearningRate * gradB[c] / float64(n)
			for j := range d {
				w.Weights[c][j] -= opts.LearningRate * (gradW[c][j]/float64(n) + opts.L2*w.Weights[c][j])
			}
		}
	}
	return w, nil
}

// compareLabels orders numeric labels numerically and others as text.
func compareLabels(a, b string) int {
	fa, ea := strconv.ParseFloat(a, 64)
	fb, eb := strconv.ParseFloat(b, 64)
	if ea == nil && eb == nil {
		return cmp.Compare(fa, fb)
	}
	return strings.Compare(a, b)
}
