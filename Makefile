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
# first (re)makes the cards of protocol v1, resuming each from its folder: the baselines and
# every model of the cpu demo's run folder when it is there (`make demo` first).
CARDS := docs/leaderboard/cards
CARD_MODELS ?= bilinear bicubic $(wildcard runs/demo/models/x2-*)
leaderboard: $(STAMP)
	$(BIN)/smoothrecon leaderboard $(CARDS) --out docs/leaderboard

leaderboard-cards: $(STAMP)
	for m in $(CARD_MODELS); do \
		n=$$(basename $$m); \
		$(BIN)/smoothrecon benchmark --model $$m --quiet --out runs/cards/$$n || exit 1; \
		mkdir -p $(CARDS)/$$n && cp runs/cards/$$n/card.json runs/cards/$$n/card.md $(CARDS)/$$n/; \
	done
	$(MAKE) leaderboard

bench: $(DEV_STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
