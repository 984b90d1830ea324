// A refusal the API answers with its status and message; the message names the field at fault and
// is safe to show the caller.

export class ApiError extends Error {
  override name = 'ApiError';
  readonly status: number;

  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}
