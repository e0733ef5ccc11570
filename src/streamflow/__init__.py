"""StreamFlow: an observable churn-prediction ML system."""

__version__ = "0.1.0"
