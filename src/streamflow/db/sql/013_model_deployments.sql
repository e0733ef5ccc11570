-- The model supply chain (issues 10 and 11): what the API serves is a *deployment record*, written
-- by streamflow.training.registry.promote() in the same transaction (and under the same advisory
-- lock) as model_alias_history, after the version's artefacts were downloaded from MLflow and
-- verified against the sha256 recorded at training. The API polls this table (never MLflow) and
-- checks the bytes against onnx_sha256 before swapping the model in. Append-only: the current
-- deployment of (model_name, alias) is the row with the highest id; older rows are the history
-- (rollbacks insert a new row).
CREATE TABLE IF NOT EXISTS model_deployments (
    id               BIGSERIAL PRIMARY KEY,
    model_name       TEXT NOT NULL,
    alias            TEXT NOT NULL,
    version          TEXT NOT NULL,
    run_id           TEXT NOT NULL,
    as_of            DATE NOT NULL,                   -- the month the version was trained on
    metrics          JSONB NOT NULL DEFAULT '{}',     -- val_* metrics of the run
    onnx_sha256      TEXT NOT NULL CHECK (onnx_sha256 ~ '^[0-9a-f]{64}$'),
    artifact_sha256  JSONB NOT NULL DEFAULT '{}',     -- artefact path -> sha256 (onnx, CBPE, trained users)
    onnx             BYTEA NOT NULL,                  -- the served bytes (onnx/model.onnx of run_id)
    onnx_size        BIGINT NOT NULL,
    previous_version TEXT,
    reason           TEXT NOT NULL,
    promoted_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);

-- ONNX bytes barely compress: store them out of line, uncompressed (cheaper reads and writes).
ALTER TABLE model_deployments ALTER COLUMN onnx SET STORAGE EXTERNAL;

CREATE INDEX IF NOT EXISTS model_deployments_current ON model_deployments (model_name, alias, id DESC);
