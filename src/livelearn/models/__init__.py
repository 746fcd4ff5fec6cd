"""Learners behind one protocol (models.base.Learner).

Adapters for models of River, scikit-learn and PyTorch live in
``livelearn.models.adapters`` (each needs its library, an optional extra).
"""

from livelearn.models.base import LEARNERS, Learner, load_learner, register, save_learner
from livelearn.models.ffm import FFMClassifier, FFMRegressor
from livelearn.models.fm import FMClassifier, FMRegressor
from livelearn.models.ftrl import FTRL
from livelearn.models.linear import LinearRegression, LogisticRegression

__all__ = ["FFMClassifier", "FFMRegressor", "FMClassifier", "FMRegressor", "FTRL", "LEARNERS",
           "Learner", "LinearRegression", "LogisticRegression", "load_learner", "register",
           "save_learner"]
