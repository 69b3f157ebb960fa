package scoring

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
)

// LabelColumn names the CSV column that holds each row's true class.
const LabelColumn = "label"

// Dataset is a labelled evaluation set: numeric features by name and one true class
// label per row.
type Dataset struct {
	// Columns names the features, in the order of each row's values.
	Columns []string
	Rows    [][]float64
	// Labels holds each row's true class, numeric labels in canonical form (see
	// CanonicalLabel).
	Labels []string
}

// LoadCSV reads a dataset from a CSV file whose header names the features and a
// "label" column; every other field must be a finite number.
func LoadCSV(path string) (*Dataset, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load dataset: %w", err)
	}
	defer f.Close()
	return readCSV(path, f)
}

func readCSV(name string, r io.Reader) (*Dataset, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: empty file, want a header row naming the features and %q", name, LabelColumn)
	}
	if err != nil {
		return nil, csvErr(name, err)
	}
	labelAt := -1
	ds := &Dataset{}
	seen := map[string]bool{}
	for i, h := range header {
		h = strings.TrimSpace(h)
		switch {
		case h == "":
			return nil, fmt.Errorf("%s:1: column %d has no name", name, i+1)
		case seen[h]:
			return nil, fmt.Errorf("%s:1: column %d: %q appears twice", name, i+1, h)
		case h == LabelColumn:
			labelAt = i
		default:
			ds.Columns = append(ds.Columns, h)
		}
		seen[h] = true
	}
	if labelAt < 0 {
		return nil, fmt.Errorf("%s:1: no %q column in the header", name, LabelColumn)
	}
	if len(ds.Columns) == 0 {
		return nil, fmt.Errorf("%s:1: no feature columns besides %q", name, LabelColumn)
	}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvErr(name, err)
		}
		line, _ := cr.FieldPos(0)
		row := make([]float64, 0, len(ds.Columns))
		for i, field := range rec {
			field = strings.TrimSpace(field)
			if i == labelAt {
				if field == "" {
					return nil, fmt.Errorf("%s:%d: column %d (%q): empty label", name, line, i+1, LabelColumn)
				}
				ds.Labels = append(ds.Labels, CanonicalLabel(field))
				continue
			}
			v, err := strconv.ParseFloat(field, 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%s:%d: column %d (%q): %q is not a finite number", name, line, i+1, header[i], field)
			}
			row = append(row, v)
		}
		ds.Rows = append(ds.Rows, row)
	}
	if len(ds.Rows) == 0 {
		return nil, fmt.Errorf("%s: no rows after the header", name)
	}
	return ds, nil
}

// csvErr rewords encoding/csv's errors as "file:line: column N: problem".
func csvErr(name string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, csv.ErrFieldCount) {
			return fmt.Errorf("%s:%d: %w: the header has a different number of fields", name, pe.Line, pe.Err)
		}
		return fmt.Errorf("%s:%d: column %d: %w", name, pe.Line, pe.Column, pe.Err)
	}
	return fmt.Errorf("%s: %w", name, err)
}
