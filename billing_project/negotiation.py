"""The API's content negotiation: DRF's, with the usual Accept headers answered without parsing them."""

from rest_framework.negotiation import DefaultContentNegotiation


class UsualAcceptNegotiation(DefaultContentNegotiation):
    """No Accept header, `*/*` or exactly the first renderer's media type: DRF would choose the first
    renderer and that media type, so it is chosen straight away (parsing the header was a tenth of a
    small request's time in the worker). Any other header, or a format override, goes through DRF."""

    def select_renderer(self, request, renderers, format_suffix=None):
        first = renderers[0]
        accept = request.META.get("HTTP_ACCEPT")
        if (
            format_suffix is None
            and accept in (None, "*/*", first.media_type)
            and not (request.META.get("QUERY_STRING") and request.query_params.get(self.settings.URL_FORMAT_OVERRIDE))
        ):
            return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)
