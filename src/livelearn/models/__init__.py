"""Learners behind one protocol (models.base.Learner)."""

from livelearn.models.base import LEARNERS, Learner, load_learner, register, save_learner
from livelearn.models.ftrl import FTRL

__all__ = ["FTRL", "LEARNERS", "Learner", "load_learner", "register", "save_learner"]
