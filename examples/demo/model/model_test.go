package model

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mlrelease/mlrelease/internal/scoring"
)

func load(t *testing.T, name string) *Weights {
	t.Helper()
	w, err := Load("../models/" + name + ".json")
	require.NoError(t, err)
	return w
}

func evalSet(t *testing.T) *scoring.Dataset {
	t.Helper()
	ds, err := scoring.LoadCSV("../data/eval.csv")
	require.NoError(t, err)
	return ds
}

// The demo needs two honest versions that are about equally good and a degraded one
// that is clearly worse.
func TestCommittedModelsAccuracy(t *testing.T) {
	ds := evalSet(t)
	v1, v2 := load(t, "v1"), load(t, "v2")
	acc1, err := v1.Accuracy(ds)
	require.NoError(t, err)
	acc2, err := v2.Accuracy(ds)
	require.NoError(t, err)
	assert.GreaterOrEqual(t, acc1, 0.95)
	assert.GreaterOrEqual(t, acc2, 0.95)
	assert.InDelta(t, acc1, acc2, 0.05, "v1 and v2 should be about equally good")

	for _, w := range []*Weights{v1, v2} {
		bad, err := w.Degrade(0.5, 1).Accuracy(ds)
		require.NoError(t, err)
		assert.LessOrEqual(t, bad, 0.75, "%s degraded by 0.5", w.Version)
		worst, err := w.Degrade(1, 1).Accuracy(ds)
		require.NoError(t, err)
		assert.LessOrEqual(t, worst, 0.6, "%s degraded by 1", w.Version)
	}
}

func TestDegradeIsDeterministicAndLeavesTheOriginal(t *testing.T) {
	w := load(t, "v1")
	before := w.clone()
	a, b := w.Degrade(0.4, 9), w.Degrade(0.4, 9)
	assert.Equal(t, a, b)
	assert.Equal(t, before, w)
	assert.NotEqual(t, w.Weights, a.Weights)
	assert.Equal(t, w, w.Degrade(0, 9))
}

// The committed weights files are what the trainer writes, so the demo can be rebuilt.
func TestTrainReproducesCommittedModels(t *testing.T) {
	train, err := scoring.LoadCSV("../data/train.csv")
	require.NoError(t, err)
	for _, opts := range Versions {
		got, err := Train(train, opts)
		require.NoError(t, err)
		want := load(t, opts.Version)
		assert.Equal(t, want.Columns, got.Columns)
		assert.Equal(t, want.Classes, got.Classes)
		for k := range want.Weights {
			assert.InDelta(t, want.Bias[k], got.Bias[k], 1e-9)
			for j := range want.Weights[k] {
				assert.InDelta(t, want.Weights[k][j], got.Weights[k][j], 1e-9)
			}
		}
	}
}

func TestTrainRejectsBadInput(t *testing.T) {
	ds := &scoring.Dataset{Columns: []string{"a"}, Rows: [][]float64{{1}, {2}}, Labels: []string{"x", "x"}}
	_, err := Train(ds, TrainOptions{Epochs: 10, LearningRate: 0.1})
	assert.ErrorContains(t, err, "1 classes")
	_, err = Train(ds, TrainOptions{Epochs: 0, LearningRate: 0.1})
	assert.Error(t, err)
}

func TestProbabilitiesAgreeWithPredict(t *testing.T) {
	w := load(t, "v2")
	ds := evalSet(t)
	for _, row := range ds.Rows {
		p := w.Probabilities(row)
		var sum float64
		best := 0
		for k, v := range p {
			sum += v
			if v > p[best] {
				best = k
			}
		}
		assert.InDelta(t, 1, sum, 1e-9)
		assert.Equal(t, w.Classes[best], w.Predict(row))
	}
}

func TestValidate(t *testing.T) {
	w := load(t, "v1")
	bad := w.clone()
	bad.Weights[1] = bad.Weights[1][:3]
	assert.ErrorContains(t, bad.Validate(), `class "1"`)
	bad = w.clone()
	bad.Std[0] = 0
	assert.ErrorContains(t, bad.Validate(), "alcohol")
	bad = w.clone()
	bad.Std[0] = math.NaN()
	assert.Error(t, bad.Validate())
	_, err := w.Align([]string{"alcohol"})
	assert.ErrorContains(t, err, `"malic_acid" is missing`)
}
