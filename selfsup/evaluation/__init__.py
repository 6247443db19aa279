"""Evaluation of learned representations.

`extract` computes a frozen backbone's features and caches them
(`features`); `lbfgs` fits the paper's L-BFGS logistic regression on them;
`sgd` trains linear and MLP heads with SGD; `protocol.linear_eval` runs a
whole evaluation of a pretraining workdir (bin/linear_eval).
"""
from selfsup.evaluation import extract, features, lbfgs
from selfsup.evaluation.extract import adaptive_max_pool, export_features
from selfsup.evaluation.features import FeatureCacheError, read_split
from selfsup.evaluation.lbfgs import LogisticRegressionResult, evaluate, fit

__all__ = ["FeatureCacheError", "LogisticRegressionResult", "adaptive_max_pool",
           "evaluate", "export_features", "extract", "features", "fit",
           "lbfgs", "read_split"]
