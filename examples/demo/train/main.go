// Command train fits the demo's two honest wine classifiers, v1 and v2, on train.csv
// and writes their weights files; it prints each model's accuracy on eval.csv. Runs
// are deterministic: the same data gives the same files.
//
//	go run ./examples/demo/train
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/mlrelease/mlrelease/examples/demo/model"
	"github.com/mlrelease/mlrelease/internal/scoring"
)

func main() {
	data := flag.String("data", "examples/demo/data", "directory holding train.csv and eval.csv")
	out := flag.String("out", "examples/demo/models", "directory for the weights files")
	flag.Parse()
	if err := run(*data, *out); err != nil {
		slog.Error("train failed", "err", err)
		os.Exit(1)
	}
}

func run(data, out string) error {
	train, err := scoring.LoadCSV(filepath.Join(data, "train.csv"))
	if err != nil {
		return err
	}
	eval, err := scoring.LoadCSV(filepath.Join(data, "eval.csv"))
	if err != nil {
		return err
	}
	for _, opts := range model.Versions {
		w, err := model.Train(train, opts)
		if err != nil {
			return err
		}
		trainAcc, _ := w.Accuracy(train)
		evalAcc, err := w.Accuracy(eval)
		if err != nil {
			return err
		}
		path := filepath.Join(out, opts.Version+".json")
		if err := w.Save(path); err != nil {
			return err
		}
		fmt.Printf("%s: train accuracy %.3f, eval accuracy %.3f (%d rows) -> %s\n", opts.Version, trainAcc, evalAcc, len(eval.Rows), path)
	}
	return nil
}
