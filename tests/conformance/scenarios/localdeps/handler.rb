require 'greeting' # a library in the function's folder, installed from its Gemfile (path: "libs/greeting")

def handler(event, context)
  Greeting::WORDS
end
