# The two commands of the README. Each creates .venv in the checkout if there is none and installs everything.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Offline-safe: importing seg_p2p turns off the telemetry, analytics and update checks of MLflow, DVC and
# albumentations (seg_p2p/__init__.py), for the study's and the tests' processes and their children.

.PHONY: study test install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

study: $(STAMP)
	$(BIN)/seg-p2p study

test: $(STAMP)
	$(BIN)/python -m pytest -q
