"""Train and register three versions of a scikit-learn wine classifier in MLflow.

    MLFLOW_TRACKING_URI=http://127.0.0.1:5000 python train.py [--model wine] [--data DIR]

Version 1 (logistic regression) becomes the champion when the model has none;
version 2 (support vector classifier) is a good candidate; version 3 is clearly worse: the same
logistic regression trained on shuffled labels, so it guesses. Seeds are fixed, so
every run trains the same models. Prints one JSON line: version -> quality.
"""

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wine", help="registered model name")
    p.add_argument("--data", default=os.path.join(HERE, "..", "demo", "data"),
                   help="folder with train.csv and eval.csv (13 features and a label column)")
    args = p.parse_args()
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        sys.exit("set MLFLOW_TRACKING_URI to your MLflow server, e.g. http://127.0.0.1:5000")

    train = pd.read_csv(os.path.join(args.data, "train.csv"))
    evalset = pd.read_csv(os.path.join(args.data, "eval.csv"))
    X, y = train.drop(columns=["label"]), train["label"]
    Xe, ye = evalset.drop(columns=["label"]), evalset["label"]
    shuffled = np.random.default_rng(7).permutation(y.to_numpy())

    candidates = [
        ("good", "logistic-regression", make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)), y),
        ("good", "support-vector", make_pipeline(StandardScaler(), SVC(C=1.0, random_state=0)), y),
        ("bad", "shuffled-labels", make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0)), shuffled),
    ]
    mlflow.set_experiment(args.model)
    client = MlflowClient()
    out = {}
    for quality, kind, model, labels in candidates:
        with mlflow.start_run(run_name=f"{args.model}-{kind}") as run:
            model.fit(X, labels)
            accuracy = float((model.predict(Xe) == ye).mean())
            mlflow.log_params({"kind": kind, "quality": quality})
            mlflow.log_metric("eval_accuracy", accuracy)
            info = mlflow.sklearn.log_model(model, name="model", input_example=X.head(3),
                                            registered_model_name=args.model)
        version = str(info.registered_model_version)
        client.set_model_version_tag(args.model, version, "example.quality", quality)
        client.set_model_version_tag(args.model, version, "example.kind", kind)
        out[version] = {"quality": quality, "kind": kind, "eval_accuracy": round(accuracy, 3), "run": run.info.run_id}

    try:
        client.get_model_version_by_alias(args.model, "champion")
    except MlflowException:
        first = min(out, key=int)
        client.set_registered_model_alias(args.model, "champion", first)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
