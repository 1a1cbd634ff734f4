"""Hello, world: ``GET`` answers ``{"message":"Hello, world!","object":"<id>"}``;
``?name=X`` greets X instead. Every other method answers 405."""

from object_primitive import Object, Request, Response, export, runtime


class Hello(Object):
    def get(self, req: Request) -> Response:
        name = req.query("name", "world")
        return Response.json({"message": f"Hello, {name}!", "object": runtime.object_id()})


Handler = export(Hello)
