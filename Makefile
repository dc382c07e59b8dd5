# The README's commands. Each target creates .venv on its own when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
OUT ?= runs/demo
PRESET ?= cpu

.PHONY: demo operators test bench lint clean leaderboard leaderboard-cards

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/smoothrecon reproduce --preset $(PRESET) --out $(OUT)
	$(BIN)/smoothrecon report $(OUT)

# Every inverse problem at the cpu-operators preset, one run folder and report each.
OPERATORS ?= denoising deblurring inpainting compressed_sensing
operators: $(STAMP)
	for op in $(OPERATORS); do \
		$(BIN)/smoothrecon reproduce --preset cpu-operators --set operator.name=$$op \
			--out runs/operators/$$op && $(BIN)/smoothrecon report runs/operators/$$op || exit 1; \
	done

test: $(DEV_STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

# The project's leaderboard (docs/leaderboard/) from its committed cards; leaderboard-cards
# first (re)makes the cards of protocol v1, each resuming from its folder under runs/cards/:
# the x2 and x4 baselines; every model of cpu-long's run folder (`make demo PRESET=cpu-long
# OUT=runs/cpu-long` first); cpu-long's x2 standard U-Net behind denoised smoothing (a denoiser at sigma 0.25 trained here); and per
# other operator an RS sigma_f 0.25 U-Net of the cpu-operators preset (trained here). Hours
# on 2 cores (docs/benchmark.md); a rerun skips finished cards.
CARDS := docs/leaderboard/cards
LONG := runs/cpu-long/models
BENCH := $(BIN)/smoothrecon benchmark --quiet
TRAIN := $(BIN)/smoothrecon train --quiet
card = $(BENCH) $(2) --out runs/cards/$(1) && mkdir -p $(CARDS)/$(1) && \
	cp runs/cards/$(1)/card.json runs/cards/$(1)/card.md $(CARDS)/$(1)/
leaderboard: $(STAMP)
	$(BIN)/smoothrecon leaderboard $(CARDS) --out docs/leaderboard

leaderboard-cards: $(STAMP)
	test -d $(LONG) || { echo "error: no $(LONG): run make demo PRESET=cpu-long OUT=runs/cpu-long first" >&2; exit 2; }
	for b in bilinear bicubic; do \
		$(call card,$$b,--model $$b --factor 2) || exit 1; \
		$(call card,x4-$$b,--model $$b --factor 4) || exit 1; \
	done
	for m in $(LONG)/*; do n=$$(basename $$m); $(call card,$$n,--model $$m) || exit 1; done
	$(TRAIN) --preset cpu-long --mode denoiser --sigma-f 0.25 --residual --out runs/cards/train/x2-denoiser0.25
	m=$$(ls -d $(LONG)/x2-residual-std-*); n=$$(basename $$m); \
		$(call card,$$n+den0.25,--model $$m --denoiser runs/cards/train/x2-denoiser0.25)
	for op in $(OPERATORS); do \
		$(TRAIN) --preset cpu-operators --set operator.name=$$op --mode gaussian --sigma-f 0.25 \
			--residual --out runs/cards/train/$$op-residual-rs0.25 || exit 1; \
		$(call card,$$op-residual-rs0.25,--model runs/cards/train/$$op-residual-rs0.25) || exit 1; \
	done
	$(MAKE) leaderboard

bench: $(DEV_STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
