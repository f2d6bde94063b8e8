def handler(event, context)
  request = event[:extensions][:request]
  "#{request.get_header('HTTP_X_TEST')}|#{request.params['q']}"
end
