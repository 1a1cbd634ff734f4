"""A counter: GET reads it, POST adds one, DELETE resets it; each change publishes `count`."""
from object_primitive import Object, Request, Response, events, export, state


class Counter(Object):
    def get(self, req: Request) -> Response:
        return Response.json({"count": state.get_json("count", 0)})

    def post(self, req: Request) -> Response:
        count = state.increment("count")
        events.publish("count", {"count": count})
        return Response.json({"count": count})

    def delete(self, req: Request) -> Response:
        state.delete("count")
        events.publish("count", {"count": 0})
        return Response.json({"count": 0})


Handler = export(Counter)
