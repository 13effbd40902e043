"""The file names inside a Model artifact folder (here without torch, for serving and deploy)."""

WEIGHTS = "model.pt"
TORCHSCRIPT = "model.torchscript.pt"
SCALER = "scaler.json"
CHANNELS = "channels.json"
HPARAMS = "hparams.json"
METRICS = "metrics.json"
# The validation input (window) whose newest row has the median score, in raw units: the deploy
# smoke test expects that row unflagged.
TYPICAL_ROWS = "typical_rows.json"
