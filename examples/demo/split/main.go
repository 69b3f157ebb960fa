// Command split turns scikit-learn's copy of the UCI wine data set into the demo's
// CSV files: wine.csv (all rows), train.csv and eval.csv, split per class with a fixed
// seed so every run writes the same files.
//
//	go run ./examples/demo/split -in sklearn/datasets/data/wine_data.csv -out examples/demo/data
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
)

// columns are scikit-learn's feature names for the wine data, with "/" replaced.
var columns = []string{
	"alcohol", "malic_acid", "ash", "alcalinity_of_ash", "magnesium", "total_phenols",
	"flavanoids", "nonflavanoid_phenols", "proanthocyanins", "color_intensity", "hue",
	"od280_od315_of_diluted_wines", "proline",
}

func main() {
	in := flag.String("in", "", "scikit-learn's wine_data.csv (from the scikit-learn wheel)")
	out := flag.String("out", "examples/demo/data", "directory for wine.csv, train.csv and eval.csv")
	evalShare := flag.Float64("eval-share", 0.4, "share of each class held out for evaluation")
	seed := flag.Uint64("seed", 7, "seed of the shuffle")
	flag.Parse()
	if err := run(*in, *out, *evalShare, *seed); err != nil {
		slog.Error("split failed", "err", err)
		os.Exit(1)
	}
}

func run(in, out string, evalShare float64, seed uint64) error {
	f, err := os.Open(in)
	if err != nil {
		return err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1
	recs, err := cr.ReadAll()
	if err != nil {
		return fmt.Errorf("read %s: %w", in, err)
	}
	// scikit-learn's first line is "n_samples,n_features,class names..."; skip it.
	rows := recs[1:]
	for i, r := range rows {
		if len(r) != len(columns)+1 {
			return fmt.Errorf("%s:%d: %d fields, want %d", in, i+2, len(r), len(columns)+1)
		}
	}
	header := append(slices.Clone(columns), "label")
	if err := write(filepath.Join(out, "wine.csv"), header, rows); err != nil {
		return err
	}

	// Stratified split: shuffle each class's rows, hold out evalShare of each.
	rng := rand.New(rand.NewPCG(seed, seed))
	byClass := map[string][][]string{}
	var classes []string
	for _, r := range rows {
		c := r[len(r)-1]
		if _, ok := byClass[c]; !ok {
			classes = append(classes, c)
		}
		byClass[c] = append(byClass[c], r)
	}
	slices.Sort(classes)
	var train, eval [][]string
	for _, c := range classes {
		rs := byClass[c]
		rng.Shuffle(len(rs), func(i, j int) { rs[i], rs[j] = rs[j], rs[i] })
		k := int(float64(len(rs))*evalShare + 0.5)
		eval = append(eval, rs[:k]...)
		train = append(train, rs[k:]...)
	}
	// Mix the classes so a prefix of either file is not one class.
	rng.Shuffle(len(train), func(i, j int) { train[i], train[j] = train[j], train[i] })
	rng.Shuffle(len(eval), func(i, j int) { eval[i], eval[j] = eval[j], eval[i] })
	if err := write(filepath.Join(out, "train.csv"), header, train); err != nil {
		return err
	}
	if err := write(filepath.Join(out, "eval.csv"), header, eval); err != nil {
		return err
	}
	slog.Info("split written", "dir", out, "rows", len(rows), "train", len(train), "eval", len(eval))
	return nil
}

func write(path string, header []string, rows [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write(header)
	_ = w.WriteAll(rows)
	if err := w.Error(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}
