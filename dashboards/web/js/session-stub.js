// Role: TEMPORARY stand-in for js/session.js (engineer `sessions`), until sign-in lands on
// main: everyone may do everything, and writes use the operator token typed into the
// acknowledge dialog (kept in this tab). Removed at the merge.

const TOKEN_KEY = 'vt-dashboard-token';

export const session = { user: null };

export function can() {
  return true;
}

export function token() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) ?? '';
  } catch {
    return '';
  }
}

export function writeHeaders() {
  return { authorization: `Token ${token()}` };
}
