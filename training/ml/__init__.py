"""The recommender in plain PyTorch and numpy: no Django import anywhere in this package.

``model`` (RecommenderConfig, RecommenderNN), ``data`` (arrays, split, negatives),
``loop`` (train), ``metrics`` (ranking evaluation), ``scoring`` (CatalogScorer: the one
scoring function the API and offline evaluation share), ``artifact`` (save and load).
``training.services`` is the one bridge between ORM rows and these arrays.
"""
