package gateway

import (
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParsePredictions(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		want       []Prediction
	}{
		{"mlflow class indices", `{"predictions": [0, 1, 2.0]}`, []Prediction{
			{Class: "0", Score: 0, HasScore: true, Numeric: true, Value: 0},
			{Class: "1", Score: 0.5, HasScore: true, Numeric: true, Value: 1},
			{Class: "2", Score: 2.0 / 3, HasScore: true, Numeric: true, Value: 2},
		}},
		{"mlflow 1.x bare list", `[3]`, []Prediction{{Class: "3", Score: 0.75, HasScore: true, Numeric: true, Value: 3}}},
		{"negative regression", `{"predictions": [-4.5]}`, []Prediction{{Class: "-4.5", Score: 0, HasScore: true, Numeric: true, Value: -4.5}}},
		{"string labels", `{"predictions": ["cat", "1.0"]}`, []Prediction{{Class: "cat"}, {Class: "1"}}},
		{"class probabilities", `{"predictions": [[0.1, 0.7, 0.2], [0.9, 0.1]]}`, []Prediction{
			{Class: "1", Score: 0.7, HasScore: true},
			{Class: "0", Score: 0.9, HasScore: true},
		}},
		{"records with label and probabilities", `{"predictions": [{"label": "dog", "probabilities": [0.2, 0.8]}]}`,
			[]Prediction{{Class: "dog", Score: 0.8, HasScore: true}}},
		{"records with label and score", `{"predictions": [{"predicted_label": 1, "score": 1.5}]}`,
			[]Prediction{{Class: "1", Score: 1, HasScore: true}}},
		{"record naming only its prediction", `{"predictions": [{"prediction": 2}]}`,
			[]Prediction{{Class: "2", Score: 2.0 / 3, HasScore: true, Numeric: true, Value: 2}}},
		{"oip flat labels", `{"model_name":"m","outputs":[{"name":"predict","shape":[2],"datatype":"INT64","data":[1,0]}]}`, []Prediction{
			{Class: "1", Score: 0.5, HasScore: true, Numeric: true, Value: 1},
			{Class: "0", Score: 0, HasScore: true, Numeric: true, Value: 0},
		}},
		{"oip probabilities", `{"outputs":[{"name":"p","shape":[2,3],"datatype":"FP32","data":[0.1,0.2,0.7, 0.5,0.3,0.2]}]}`, []Prediction{
			{Class: "2", Score: 0.7, HasScore: true},
			{Class: "0", Score: 0.5, HasScore: true},
		}},
		{"oip nested rows", `{"outputs":[{"name":"p","shape":[1,2],"datatype":"FP32","data":[[0.25,0.75]]}]}`,
			[]Prediction{{Class: "1", Score: 0.75, HasScore: true}}},
		{"oip bytes", `{"outputs":[{"name":"label","shape":[1,1],"datatype":"BYTES","data":["spam"]}]}`,
			[]Prediction{{Class: "spam"}}},
		{"oip label with probability output", `{"outputs":[
			{"name":"predict","shape":[1],"datatype":"BYTES","data":["spam"]},
			{"name":"predict_proba","shape":[1,2],"datatype":"FP32","data":[0.05,0.95]}]}`,
			[]Prediction{{Class: "spam", Score: 0.95, HasScore: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParsePredictions([]byte(tc.body))
			require.NoError(t, err)
			require.Len(t, got, len(tc.want))
			for i := range got {
				assert.InDelta(t, tc.want[i].Score, got[i].Score, 1e-12, "row %d", i)
				got[i].Score = tc.want[i].Score
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestParsePredictionsRefuses(t *testing.T) {
	for _, body := range []string{``, `{}`, `{"predictions": null}`, `{"predictions": {"a": 1}}`, `{"predictions": [null]}`,
		`{"predictions": [[]]}`, `{"predictions": [{"foo": 1}]}`, `{"predictions": [[["x"]]]}`, `not json`,
		`{"outputs":[{"shape":[3],"data":[1,2]}]}`, `{"outputs":[{"shape":[1,1,1],"data":[1]}]}`,
		`{"outputs":[{"shape":[-1,-1],"data":[1]}]}`} {
		_, err := ParsePredictions([]byte(body))
		assert.Error(t, err, body)
	}
}

func TestParsePredictionsBoundsRows(t *testing.T) {
	body := []byte(`{"predictions": [`)
	for i := range maxPredictionRows + 10 {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, '1')
	}
	body = append(body, "]}"...)
	got, err := ParsePredictions(body)
	require.NoError(t, err)
	assert.Len(t, got, maxPredictionRows)
}

func TestAgree(t *testing.T) {
	num := func(x float64) Prediction { return numericPrediction(x) }
	assert.True(t, Agree(num(1), num(1), 0.01))
	assert.False(t, Agree(num(1), num(2), 0.01), "class indices differ")
	assert.True(t, Agree(num(0.500), num(0.505), 0.01), "absolute tolerance up to 1")
	assert.False(t, Agree(num(0.50), num(0.52), 0.01))
	assert.True(t, Agree(num(1000), num(1009), 0.01), "relative above 1")
	assert.False(t, Agree(num(1000), num(1011), 0.01))
	// Probabilities: the class decides, not how close the largest probabilities are.
	a := Prediction{Class: "0", Score: 0.6, HasScore: true}
	b := Prediction{Class: "1", Score: 0.6, HasScore: true}
	assert.False(t, Agree(a, b, 0.01))
	b.Class = "0"
	b.Score = 0.9
	assert.True(t, Agree(a, b, 0.01))
	assert.False(t, Agree(Prediction{}, Prediction{}, 0.01), "rows without a class never agree")
}

func TestNumericScoreIsMonotoneAndBounded(t *testing.T) {
	prev := -1.0
	for _, x := range []float64{math.Inf(-1), -3, 0, 1e-9, 0.5, 1, 2, 9, 1e9, math.Inf(1)} {
		s := NumericScore(x)
		assert.GreaterOrEqual(t, s, prev, "x=%v", x)
		assert.True(t, s >= 0 && s <= 1, "x=%v s=%v", x, s)
		prev = s
	}
	assert.Equal(t, 0.5, NumericScore(1))
}

// FuzzParsePredictions: any body either parses into bounded rows with scores in
// [0, 1], or is refused; it never panics.
func FuzzParsePredictions(f *testing.F) {
	for _, seed := range []string{
		`{"predictions": [0, 1, 2]}`, `[1.5]`, `{"predictions": ["a", "b"]}`, `{"predictions": [[0.1, 0.9]]}`,
		`{"predictions": [{"label": "x", "probabilities": [0.3, 0.7]}]}`, `{"predictions": [{"score": 0.4}]}`,
		`{"outputs":[{"name":"p","shape":[2,2],"datatype":"FP32","data":[0.1,0.9,0.8,0.2]}]}`,
		`{"outputs":[{"shape":[1],"datatype":"BYTES","data":["x"]},{"shape":[1,2],"data":[[0.4,0.6]]}]}`,
		`{"outputs":[{"shape":[9223372036854775807,2],"data":[1,2]}]}`,
		`{"outputs":[{"shape":[4611686018427387905,4],"data":[1,2,3,4]}]}`, `{"predictions": [1e308, -1e308]}`, `{}`, `[]`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		preds, err := ParsePredictions(body)
		if err != nil {
			return
		}
		if len(preds) > maxPredictionRows {
			t.Fatalf("%d rows", len(preds))
		}
		for _, p := range preds {
			if p.HasScore && !(p.Score >= 0 && p.Score <= 1) {
				t.Fatalf("score %v outside [0, 1] for %q", p.Score, body)
			}
		}
	})
}

// The fast path for numeric MLflow answers gives what the general parse gives, and
// leaves everything else to it.
func TestNumericPredictionsMatchGeneralParse(t *testing.T) {
	fast := []string{
		`{"predictions": [0, 1, 2.0]}`,
		`{"predictions":[[0.1,0.7,0.2],[0.9,0.1]]}`,
		" \n{ \"predictions\" :\t[ [ 0.2 , 0.8 ] , -4.5e-3 , 1E+2, -0, 0.0 ] } \r\n",
		`{"predictions": [[1]]}`,
		`{"predictions": [[-1, -2]]}`,
		`{"predictions": [[0.3, 0.3, 0.3]]}`,
		`{"predictions": [1e308, 5e-324, 123456789012345678901234567890]}`,
		`{"predictions": [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.11, 0.12, 0.13, 0.14, 0.15, 0.16, 0.17, 0.18, 0.19, 0.2]]}`,
	}
	slow := []string{
		`{"predictions": []}`, `{"predictions": null}`, `{"predictions": [[]]}`, `{"predictions": ["cat"]}`,
		`{"predictions": [{"label": 1}]}`, `{"predictions": [1], "x": 2}`, `{"x": 2, "predictions": [1]}`,
		`{"Predictions": [1]}`, `{"predictions": [1]} x`, `{"predictions": [1,]}`, `{"predictions": [01]}`,
		`{"predictions": [+1]}`, `{"predictions": [1.]}`, `{"predictions": [.5]}`, `{"predictions": [1e]}`,
		`{"predictions": [1e400]}`, `{"predictions": [0x10]}`, `{"predictions": [1_0]}`, `{"predictions": [NaN]}`,
		`{"predictions": [[1, "a"]]}`, `{"predictions": [[1] [2]]}`, `{"predictions": [1]`, `{"predictions": [1]}}`,
		`{"predictions": [1], "predictions": [2]}`, `{"outputs": []}`, `{"predictions": [true]}`, `{"predictions": [[null]]}`,
	}
	for _, body := range fast {
		got, ok := parseNumericPredictions([]byte(body))
		require.True(t, ok, body)
		want, err := parseEnvelope([]byte(body))
		require.NoError(t, err, body)
		assert.Equal(t, want, got, body)
	}
	for _, body := range slow {
		_, ok := parseNumericPredictions([]byte(body))
		assert.False(t, ok, body)
	}
	rows := make([]byte, 0, 8<<10)
	rows = append(rows, `{"predictions": [0`...)
	for range maxPredictionRows + 10 {
		rows = append(rows, ",1"...)
	}
	rows = append(rows, "]}"...)
	_, ok := parseNumericPredictions(rows)
	assert.False(t, ok, "more rows than are read go the general way")
	got, err := ParsePredictions(rows)
	require.NoError(t, err)
	assert.Len(t, got, maxPredictionRows)
}

func FuzzNumericPredictions(f *testing.F) {
	for _, s := range []string{`{"predictions": [0, 1, 2.0]}`, `{"predictions":[[0.1,0.7],[1e3,-2]]}`, `{"predictions": [1e400]}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		got, ok := parseNumericPredictions([]byte(body))
		if !ok {
			return
		}
		want, err := parseEnvelope([]byte(body))
		if err != nil {
			t.Fatalf("%q: fast path read %v, the general parse failed: %v", body, got, err)
		}
		for i := range want {
			// NaN cannot occur; equal rows compare equal.
			if want[i] != got[i] {
				t.Fatalf("%q row %d: fast %+v, general %+v", body, i, got[i], want[i])
			}
		}
		if len(want) != len(got) {
			t.Fatalf("%q: %d rows, general %d", body, len(got), len(want))
		}
	})
}
