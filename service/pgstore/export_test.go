package pgstore

// MapError exposes the error mapper to the external tests, which provoke
// real server errors to feed it.
var MapError = mapError
