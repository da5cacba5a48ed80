# rcnn_lab: the two commands of the README are `make book` and `make test`.
# Both set up everything on a fresh machine: .venv (torch 2.14.1 / torchvision 0.29.1 from the
# local wheels), the package with its extras, the vendored book JavaScript (npm), and, for the
# tests, Chromium from Debian.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rcnn_lab-installed
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with sanitize.cfg
# "A machine that is not yours": generic ATen kernels, oneDNN capped at SSE4.1, one thread.
GENERIC_CPU := ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 OMP_NUM_THREADS=1

.PHONY: book test install vendor chromium lint unit nbval nbval-native nbval-generic html browser execute lab bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -e ".[book,test]"
	$(BIN)/python -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

install: $(STAMP)

_vendor/.stamp: scripts/vendor_js.sh
	bash scripts/vendor_js.sh
	touch $@

vendor: _vendor/.stamp

chromium:
	bash scripts/ensure_chromium.sh

## The book: HTML into _build/html, warnings are errors, rendered from the nbval-checked outputs.
book: html

html: install vendor
	$(BIN)/jupyter-book build . -W -n --keep-going

## Every test: lint, unit and parity tests, strict nbval of every chapter, the book build,
## and the real-browser check of the built book.
test: install vendor chromium
	$(MAKE) lint
	$(MAKE) unit
	$(MAKE) nbval
	$(MAKE) html
	$(MAKE) browser

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: install
	$(BIN)/pytest tests -m "not browser"

## Strict nbval twice: with this CPU's kernels, then with generic ones (the stored outputs
## must hold on any machine, not only the one that executed the chapters).
nbval: nbval-native nbval-generic

nbval-native: install
	$(BIN)/pytest -p no:cacheprovider $(NBVAL) book

nbval-generic: install
	$(GENERIC_CPU) $(BIN)/pytest -p no:cacheprovider $(NBVAL) book

browser: install chromium
	$(BIN)/pytest tests -m browser

## Re-execute chapters in place (all, or NB="book/01_boxes_iou_nms.ipynb").
execute: install
	$(BIN)/python scripts/execute_notebooks.py $(NB)

## Open the chapters in JupyterLab.
lab: install
	$(BIN)/jupyter lab book/

## rcnn_lab vs torchvision side by side (ops, heads, models, a training step): a markdown table
## and benchmarks/results/<machine>.json. BENCH_ARGS="--quick", "--only nms", "--device cuda".
bench: install
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf _build .pytest_cache .ruff_cache
