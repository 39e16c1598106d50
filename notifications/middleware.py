from django.http import JsonResponse


class JsonErrorsForApi:
    """Every error under /api/ answers in JSON, even the ones Django or the router write
    (405 Method Not Allowed, 404 for an unknown path): {"detail": "<reason>"}."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            request.path.startswith("/api/")
            and response.status_code >= 400
            and not response.get("Content-Type", "").startswith("application/json")
        ):
            replacement = JsonResponse(
                {"detail": response.reason_phrase}, status=response.status_code
            )
            if "Allow" in response:
                replacement["Allow"] = response["Allow"]
            return replacement
        return response
