"""The news-feed simulator: the hidden "real world" that the demo and the tests learn from."""

from livelearn.sim.world import START_MS, NewsFeed, Request

__all__ = ["START_MS", "NewsFeed", "Request"]
