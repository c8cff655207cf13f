"""FastAPI fixture app: ``python fastapi_app.py PORT debug|prod`` (served by uvicorn)."""

import sys
import traceback

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI(debug=sys.argv[2] == "debug")


class LookupFailed(Exception):
    pass


@app.exception_handler(LookupFailed)
async def lookup_failed(request: Request, exc: LookupFailed):
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return JSONResponse({"detail": "lookup failed", "traceback": [ln.rstrip("\n") for ln in lines]},
                        status_code=500)


@app.get("/api/users/{user_id}/settings")
async def settings(user_id: int):
    return {"user_id": user_id, "theme": "dark", "locale": "en-US", "beta": False}


@app.get("/api/divide")
async def divide(a: int, b: int):
    return {"result": a / b}


@app.get("/api/lookup/{key}")
async def lookup(key: str):
    table = {"a": 1}
    try:
        return {"value": table[key]}
    except KeyError as e:
        raise LookupFailed(f"unknown key {key!r}") from e


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
