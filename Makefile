# Thin aliases: dev.py is the source of truth (and works without make).
PYTHON ?= python3

.PHONY: run test lint format install

run:
	$(PYTHON) dev.py run

test:
	$(PYTHON) dev.py test

lint:
	$(PYTHON) dev.py lint

format:
	$(PYTHON) dev.py format

install:
	$(PYTHON) dev.py install
