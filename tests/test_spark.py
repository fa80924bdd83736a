"""cfm.spark: a local[2] Spark session scores a DataFrame as `cfm predict`
scores the same lines (skipped without pyspark or Java)."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import cfm

pytest.importorskip("pyspark")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("Spark needs Java", allow_module_level=True)
cspark = pytest.importorskip("cfm.spark")


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    root = os.path.dirname(os.path.dirname(os.path.abspath(cfm.__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    session = (SparkSession.builder.master("local[2]").appName("cfm-test")
               .config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.executorEnv.PYTHONPATH", os.environ["PYTHONPATH"])
               .config("spark.sql.execution.arrow.maxRecordsPerBatch", "300")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _cli(model, data, tmp_path, *extra):
    out = tmp_path / "cli.txt"
    subprocess.run([sys.executable, "-m", "cfm", "predict", str(model), str(data), "-o",
                    str(out), "-q", *extra], check=True, env=dict(os.environ))
    return out.read_text().split()


@pytest.mark.parametrize("kind", ["fm", "ffm"])
def test_dataframe_scores_match_cfm_predict(spark, tmp_path, kind):
    rng = np.random.default_rng(0)
    n, n_feat = 1_000, 60
    X = sp.random(n, n_feat, density=0.1, format="csr", random_state=1, dtype=np.float32)
    X.data[:] = rng.random(X.nnz).astype(np.float32) + 0.5
    y = (rng.random(n) < 0.4).astype(float)
    data = tmp_path / "data.txt"
    if kind == "ffm":
        fields = np.arange(n_feat) % 5
        model = cfm.FFMClassifier(n_factors=4, n_epochs=2, random_state=0).fit(X, y, fields)
        cfm.dump_libffm(X, y, fields, data)
    else:
        model = cfm.FMClassifier(n_epochs=2, random_state=0).fit(X, y)
        cfm.dump_libsvm(X, y, data)
    path = tmp_path / "model.cfm"
    model.save(path)
    lines = data.read_text().splitlines()
    df = spark.createDataFrame([(i, s) for i, s in enumerate(lines)], "id long, line string")
    got = cspark.predict(df, str(path), input_col="line").toPandas()
    got = got.sort_values("id")["prediction"].to_numpy()
    assert got.dtype == np.float64 and len(got) == n
    assert ["%.9g" % v for v in got] == _cli(path, data, tmp_path)
    if kind == "fm":  # index / value arrays, raw scores; ids beyond the model ignored
        rows = [(i, [int(j) for j in X.indices[X.indptr[i]:X.indptr[i + 1]]] + [n_feat + 5],
                 [float(v) for v in X.data[X.indptr[i]:X.indptr[i + 1]]] + [1.0])
                for i in range(n)]
        adf = spark.createDataFrame(rows, "id long, idx array<long>, val array<double>")
        raw = cspark.predict(adf, str(path), indices_col="idx", values_col="val", raw=True,
                             output_col="score").toPandas().sort_values("id")["score"]
        assert ["%.9g" % v for v in raw] == _cli(path, data, tmp_path, "--raw")
