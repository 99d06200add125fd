"""Per-class test figures of a polygon training run: python per_class.py <run>/test_predictions.npz > per_class.csv"""

import sys
import numpy as np
import pandas as pd

z = np.load(sys.argv[1])
rows = []
for n in sorted(set(z["true_n_sides"].tolist())):
    m = z["true_n_sides"] == n
    err = np.abs(np.log(z["pred_rounding"][m]) - np.log(z["true_rounding"][m]))
    rows.append({"n_sides": n, "particles": int(m.sum()),
                 "jaccard_median": float(np.median(z["jaccard"][m])),
                 "jaccard_p10": float(np.quantile(z["jaccard"][m], 0.1)),
                 "n_sides_exact": float((z["pred_n_sides"][m] == n).mean()),
                 "abs_log_rounding_error_median": float(np.median(err))})
r = z["true_rounding"]
err = np.abs(np.log(z["pred_rounding"]) - np.log(r))
for lo, hi in ((0.03, 0.05), (0.05, 0.2), (0.2, 0.9)):
    m = (r >= lo) & (r < hi) if hi < 0.9 else (r >= lo)
    rows.append({"rounding_true": f"{lo}-{hi}", "particles": int(m.sum()),
                 "jaccard_median": float(np.median(z["jaccard"][m])),
                 "jaccard_p10": float(np.quantile(z["jaccard"][m], 0.1)),
                 "abs_log_rounding_error_median": float(np.median(err[m]))})
table = pd.DataFrame(rows)
table["n_sides"] = table["n_sides"].astype("Int64")
table.to_csv(sys.stdout, index=False, float_format="%.4f")
