"""``/ws/ohlcv``: snapshot, resume and live candle events (protocol in ``api.streaming``)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from api.streaming import CLOSE_TRY_AGAIN, WsRejected, WsSession, parse_request, reject

router = APIRouter(tags=["websocket"])


@router.websocket("/ws/ohlcv")
async def ohlcv_ws(websocket: WebSocket) -> None:
    state = websocket.app.state
    try:
        req = parse_request(websocket.query_params, websocket.headers, state.settings)
    except WsRejected as r:
        await reject(websocket, r.code, r.reason)
        return
    queries, hub, reads = (
        getattr(state, "queries", None),
        getattr(state, "hub", None),
        getattr(state, "reads", None),
    )
    if queries is None or hub is None or reads is None:
        await reject(websocket, CLOSE_TRY_AGAIN, "the API has not started")
        return
    await websocket.accept()
    await WsSession(websocket, req, queries, hub, reads, queue_max=state.ws_queue_max,
                    feature_hub=getattr(state, "feature_hub", None),
                    news_hub=getattr(state, "news_hub", None)).run()  # fmt: skip
