"""Data for bidfcl: a ground-truth marketing simulator, the paper's OBS/RCT protocol, loaders.

* :func:`make_marketing` -> :class:`MarketingData` (RCT / OBS / validation / test splits with the
  true expected revenue and cost of every option, :meth:`MarketingData.true_value`,
  :meth:`MarketingData.oracle`).
* :data:`SCENARIOS`, :func:`make_scenario`: named, documented make_marketing settings
  (``bidfcl scenarios`` lists them with their measured headroom).
* :func:`hybrid_split` -> :class:`HybridSplit`: METHOD.md section 6 "Hybrid" protocol on any RCT data.
* :func:`load_criteo_uplift`, :func:`load_table`: local CSV (optionally gzip) / Parquet files
  (pyarrow, an optional dependency).
* :func:`write_table`, :func:`write_splits`: rows back to Parquet/CSV (what ``load_table`` reads).
* :class:`UpliftDataset`: the rows every trainer consumes, in memory or memory-mapped, in batches.
"""

from .dataset import DataError, UpliftDataset
from .export import write_splits, write_table
from .loaders import CRITEO_COLUMNS, CRITEO_FEATURES, count_rows, load_criteo_uplift, load_table
from .protocol import HybridSplit, RidgeTLearner, hybrid_split
from .synthetic import SPLITS, MarketingData, MarketingWorld, OraclePolicy, make_marketing
from .scenarios import SCENARIOS, Scenario, get_scenario, make_scenario

__all__ = [
    "DataError",
    "UpliftDataset",
    "SPLITS",
    "MarketingData",
    "MarketingWorld",
    "OraclePolicy",
    "make_marketing",
    "SCENARIOS",
    "Scenario",
    "get_scenario",
    "make_scenario",
    "HybridSplit",
    "RidgeTLearner",
    "hybrid_split",
    "CRITEO_COLUMNS",
    "CRITEO_FEATURES",
    "load_criteo_uplift",
    "load_table",
    "count_rows",
    "write_table",
    "write_splits",
]
