"""The file names inside a Model artifact folder (here without torch, for serving and deploy)."""

WEIGHTS = "model.pt"
TORCHSCRIPT = "model.torchscript.pt"
SCALER = "scaler.json"
CHANNELS = "channels.json"
HPARAMS = "hparams.json"
METRICS = "metrics.json"
# The validation row of median score, in raw units: the deploy smoke test expects it unflagged.
TYPICAL_ROW = "typical_row.json"
