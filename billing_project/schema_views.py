"""The OpenAPI document's view (apart from billing_project.schema, which DRF's settings import)."""

from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView


class CachedSchemaView(SpectacularAPIView):
    """`/api/schema/`, generated once per process and rendered once per format, then served from memory.

    drf-spectacular builds the document afresh on every call: tenths of a second of CPU that anyone
    may ask for in a loop, for a document that changes only with the code (that is, with a restart).
    The API is neither versioned nor translated, so `?version=` and `?lang=` make no other document.
    """

    document: dict = {}
    rendered: dict[str, tuple[bytes, str]] = {}

    def _get_version_parameter(self, request):
        return None

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        if not self.document:
            self.document.update(self._get_schema_response(request).data)
        renderer = request.accepted_renderer
        if renderer.media_type not in self.rendered:
            content = renderer.render(self.document, renderer.media_type, self.get_renderer_context())
            charset = f"; charset={renderer.charset}" if renderer.charset else ""
            self.rendered[renderer.media_type] = (content, renderer.media_type + charset)
        content, content_type = self.rendered[renderer.media_type]
        disposition = f'inline; filename="{self._get_filename(request, None)}"'
        return HttpResponse(content, content_type=content_type, headers={"Content-Disposition": disposition})
