package gateway

import "strconv"

// parseNumericPredictions reads the commonest answer, MLflow's {"predictions": [...]}
// whose rows are all numbers or all lists of numbers, without encoding/json: the
// generic parse was most of the gateway's allocations per request. ok is false for
// anything else (other keys, strings, records, nulls, empty lists, more rows than
// are read, a number a float64 cannot hold, any syntax error), which
// ParsePredictions then reads the general way; where ok is true both give the same.
func parseNumericPredictions(body []byte) (preds []Prediction, ok bool) {
	p := numParser{b: body}
	if !p.lit("{") || !p.lit(`"predictions"`) || !p.lit(":") || !p.lit("[") {
		return nil, false
	}
	var probs [16]float64
	for {
		if len(preds) == maxPredictionRows {
			return nil, false
		}
		var row Prediction
		if p.lit("[") {
			ps := probs[:0]
			for {
				x, ok := p.number()
				if !ok {
					return nil, false
				}
				ps = append(ps, x)
				if p.lit("]") {
					break
				}
				if !p.lit(",") {
					return nil, false
				}
			}
			var err error
			if row, err = probabilityPrediction(ps); err != nil {
				return nil, false
			}
		} else {
			x, ok := p.number()
			if !ok {
				return nil, false
			}
			row = numericPrediction(x)
		}
		if preds == nil {
			preds = make([]Prediction, 0, 4)
		}
		preds = append(preds, row)
		if p.lit("]") {
			break
		}
		if !p.lit(",") {
			return nil, false
		}
	}
	if !p.lit("}") {
		return nil, false
	}
	p.space()
	return preds, p.i == len(p.b)
}

type numParser struct {
	b []byte
	i int
}

func (p *numParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// lit skips whitespace and then s when it comes next.
func (p *numParser) lit(s string) bool {
	p.space()
	if len(p.b)-p.i < len(s) || string(p.b[p.i:p.i+len(s)]) != s {
		return false
	}
	p.i += len(s)
	return true
}

// number skips whitespace and reads a JSON number, as encoding/json would into a
// float64.
func (p *numParser) number() (float64, bool) {
	p.space()
	start, b := p.i, p.b
	i := p.i
	digits := func() bool {
		j := i
		for i < len(b) && '0' <= b[i] && b[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return 0, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return 0, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return 0, false
		}
	}
	x, err := strconv.ParseFloat(string(b[start:i]), 64)
	if err != nil {
		return 0, false
	}
	p.i = i
	return x, true
}
