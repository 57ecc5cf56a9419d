# sharpscope developer commands.  `make test` and `make demo` install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PIP_CONSTRAINT=$(CURDIR)/constraints.txt $(BIN)/pip install --quiet -c constraints.txt -e ".[test,napari,zarr,export]"
	# evaluation-only data: images that ship inside these wheels (never used for training);
	# --no-deps because sdeconv requires torchvision, which has no CPU build here
	$(BIN)/pip install --quiet --no-deps sdeconv==1.0.4 stardist==0.9.2
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

demo: $(STAMP)
	$(BIN)/sharpscope demo -o demo-output

clean:
	rm -rf $(VENV) build dist demo-output .pytest_cache
