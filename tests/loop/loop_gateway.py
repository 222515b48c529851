"""The gateway with the loop wired in, as the lead's factory will do it: run by the tests as a process.

    python tests/loop/loop_gateway.py --config CFG.yaml --port 8123
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from gateway.settings import load_settings
    from gateway.web.app import create_app, wire

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(load_settings(args.config))
    wire(app)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
