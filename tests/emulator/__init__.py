"""An emulated Kubeflow for the tests: a Kubernetes API on loopback whose controllers start, as
local processes, every container of every pod the project creates."""
