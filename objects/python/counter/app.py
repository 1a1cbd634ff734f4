"""A counter: GET reads it, POST adds one, DELETE resets it."""
from object_primitive import Object, Request, Response, export, state


class Counter(Object):
    def get(self, req: Request) -> Response:
        return Response.json({"count": state.get_json("count", 0)})

    def post(self, req: Request) -> Response:
        return Response.json({"count": state.increment("count")})

    def delete(self, req: Request) -> Response:
        state.delete("count")
        return Response.json({"count": 0})


Handler = export(Counter)
